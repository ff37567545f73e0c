// Text a person cannot read because it is cut: DOM elements that clip their text, and grid cells
// (st.dataframe draws on a canvas) wider than their column. Returns one line per cut text.
() => {
  // DOM text cut: an element that clips its text (overflow hidden/clip, ellipsis) narrower than its content
  const cut = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('[data-testid="stSidebarNav"], .js-plotly-plot, .katex, canvas, [data-testid="stSkipToContent"]')) continue;
    if (el.clientWidth <= 1 || el.scrollWidth <= el.clientWidth + 1) continue;
    const cs = getComputedStyle(el);
    if (cs.overflowX === 'auto' || cs.overflowX === 'scroll') continue;  // scrolls: nothing is lost
    if (cs.overflowX === 'visible' && cs.textOverflow !== 'ellipsis') continue;  // spills, not cut
    const text = (el.innerText || '').trim();
    if (!text) continue;
    cut.push(`${el.tagName}.${el.getAttribute('data-testid') || ''}: "${text.slice(0, 60)}" ${el.clientWidth}<${el.scrollWidth}px`);
  }
  // a grid (glide) draws on a canvas: its column widths are read from the component that draws it
  // (React props), its text from the table it keeps for screen readers, measured in its own fonts
  const ctx = document.createElement('canvas').getContext('2d');
  for (const grid of document.querySelectorAll('.stDataFrameGlideDataEditor')) {
    const canvas = grid.querySelector('canvas[data-testid="data-grid-canvas"]');
    const table = grid.querySelector('table[role="grid"]');
    if (!canvas || !table) continue;
    const fk = Object.keys(canvas).find(k => k.startsWith('__reactFiber'));
    let f = fk && canvas[fk], columns = null;
    for (let n = 0; f && n < 60 && !columns; n++, f = f.return) {
      const p = f.memoizedProps;
      if (p && Array.isArray(p.columns) && p.columns.length && typeof p.columns[0].width === 'number') columns = p.columns;
    }
    if (!columns) { cut.push('grid: column widths not found'); continue; }
    const st = getComputedStyle(grid);
    const family = st.getPropertyValue('--gdg-font-family');
    const pad = parseFloat(st.getPropertyValue('--gdg-cell-horizontal-padding'));
    const fonts = {th: `${st.getPropertyValue('--gdg-header-font-style')} ${family}`,
                   td: `${st.getPropertyValue('--gdg-base-font-style')} ${family}`};
    for (const cell of table.querySelectorAll('th, td')) {
      const col = columns[parseInt(cell.getAttribute('aria-colindex')) - 1];
      // number cells are listed unformatted (0.9910581222056631 where the grid shows 0.991): only text is measured
      if (!col || (cell.tagName === 'TD' && cell.innerText.trim() !== '' && !isNaN(Number(cell.innerText)))) continue;
      ctx.font = fonts[cell.tagName.toLowerCase()];
      const need = ctx.measureText(cell.innerText).width + 2 * pad + (cell.tagName === 'TH' && col.icon ? 28 : 0);
      if (need > col.width + 1) cut.push(`grid ${cell.tagName} "${cell.innerText.slice(0, 60)}" needs ${Math.round(need)} > ${col.width}px`);
    }
  }
  return cut;
}
