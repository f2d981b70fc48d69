// One list page for any kind of object: the API's filters as a search box and one control
// per column, its order and pages (lists of tens of thousands of rows stay one page long),
// rows selected for mass actions, and rows kept up to date through /api/ws.
import {call, ApiError, Live} from './api.js';
import {h, clear, field, select, confirm, describe, toast, formatNumber, debounce, uid} from './dom.js';
import {session} from './session.js';
import * as render from './render.js';

const PAGE_SIZES = [10, 25, 50, 100, 200];
const CHUNK = 2000;  // ids per change request (well under api.request.max_size)

// The filter a column's control gives: text is "contains", the others are equality.
// A plain object maps each choice to its condition ({failed: {'!=': 0}}).
function condition(column, value) {
  if (value === '' || value === undefined || value === null) return null;
  if (column.filter === 'text') return {'~': `%${value}%`};
  if (column.filter === 'number') return Number(value);
  if (column.filter === 'since') return {'>=': value};
  if (column.filter === 'until') return {'<=': `${value} 23:59:59`};
  if (isChoices(column.filter)) return column.filter[value] ?? null;
  return value;
}

// The route parameter (and state key) of a filter: its field, unless two filter one field.
function param(column) {
  return column.param || column.field;
}

function isChoices(filter) {
  return filter !== null && typeof filter === 'object' && !Array.isArray(filter);
}

// Everything a list page shows comes from here: `spec` (objects.js) says what the object
// has, the route's parameters (#/vms?state=running) give the starting filters.
export function listPage(spec, params) {
  const idKey = spec.id || 'id';
  const state = {
    search: params.get('q') || '',
    filters: Object.fromEntries([...spec.columns, ...(spec.filtersOnly || [])].filter((c) => c.filter && params.has(param(c)))
      .map((c) => [param(c), params.get(param(c))])),
    order: params.get('order') || spec.order || null,
    desc: params.get('dir') === 'desc' || (!params.get('order') && Boolean(spec.desc)),
    page: Math.max(1, Number(params.get('page')) || 1),
    block: Number(params.get('block')) || session.pageSize,
    rows: [], total: 0, loaded: false,
    selected: new Set(), allMatching: false,
  };
  let live = null;
  const actions = (spec.actions || []).filter((a) => session.can(a.action) && (!a.when || a.when()));
  const selectable = actions.length > 0;  // rows are selected only to act on them

  const titleId = uid('title');
  const heading = h('h1', {id: titleId, tabindex: '-1'}, spec.title);
  const count = h('span', {class: 'count', 'aria-live': 'polite'});
  const alert = h('div', {class: 'alert', role: 'alert', hidden: true});
  const searchBox = h('input', {type: 'search', value: state.search, placeholder: spec.searchHint || 'Name contains…'});
  const filterPanel = h('div', {class: 'filters', id: uid('filters'), hidden: Object.keys(state.filters).length === 0});
  const filterToggle = h('button', {type: 'button', 'aria-expanded': String(!filterPanel.hidden),
    'aria-controls': filterPanel.id}, 'Filters');
  const selectionText = h('span', {class: 'selection-text', 'aria-live': 'polite'});
  const allMatchingButton = h('button', {type: 'button', class: 'link', hidden: true});
  const clearSelection = h('button', {type: 'button', class: 'link', hidden: true}, 'Clear selection');
  const actionBar = h('div', {class: 'actions', role: 'toolbar', 'aria-label': 'Actions on the selected rows'});
  const pageAll = h('input', {type: 'checkbox', 'aria-label': 'Select every row of this page'});
  const head = h('tr');
  const body = h('tbody');
  const caption = h('caption', {class: 'sr-only'});
  const table = h('table', {'aria-labelledby': titleId}, caption, h('thead', {}, head), body);
  const pageInput = h('input', {type: 'number', min: 1, value: state.page, class: 'page-number', 'aria-label': 'Page number'});
  const pages = h('span');
  const previous = h('button', {type: 'button'}, 'Previous');
  const next = h('button', {type: 'button'}, 'Next');
  const sizeSelect = select(PAGE_SIZES.map((n) => [n, String(n)]), state.block);
  if (!PAGE_SIZES.includes(state.block)) sizeSelect.append(h('option', {value: String(state.block)}, String(state.block)));
  sizeSelect.value = String(state.block);

  const createButton = spec.create && spec.create.allowed()
    ? h('button', {type: 'button', class: 'primary', onclick: () => spec.create.open().then((done) => {
      if (done) { toast(`${spec.noun} created`); refresh(); }
    })},
      spec.create.label || `New ${spec.noun}`)
    : null;

  const element = h('section', {class: 'page'},
    h('div', {class: 'page-head'}, heading, count, createButton),
    alert,
    h('div', {class: 'toolbar'}, field(spec.searchLabel || 'Search by name', searchBox), filterToggle),
    filterPanel,
    selectable ? h('div', {class: 'selection'}, selectionText, allMatchingButton, clearSelection, actionBar) : null,
    h('div', {class: 'table-wrap'}, table),
    h('nav', {class: 'pager', 'aria-label': `Pages of ${spec.title}`}, previous,
      h('span', {class: 'page-of'}, 'Page ', pageInput, ' of ', pages), next,
      field('Rows per page', sizeSelect)));

  // -- filters --------------------------------------------------------------------------
  const filterable = [...spec.columns, ...(spec.filtersOnly || [])].filter((c) => c.filter && (!c.when || c.when()));
  const filterControls = filterable.map((column) => {
    let input;
    if (column.filter === 'bool') {
      input = select([['', 'Any'], ['1', 'Yes'], ['0', 'No']], state.filters[param(column)] ?? '');
    } else if (Array.isArray(column.filter)) {
      input = select([['', 'Any'], ...column.filter.map((v) => [v, v])], state.filters[param(column)] ?? '');
    } else if (isChoices(column.filter)) {
      input = select([['', 'Any'], ...Object.keys(column.filter).map((v) => [v, v])], state.filters[param(column)] ?? '');
    } else {
      const type = {number: 'number', since: 'date', until: 'date'}[column.filter] || 'search';
      input = h('input', {type, value: state.filters[param(column)] ?? ''});
    }
    input.dataset.filter = param(column);
    const changed = () => { state.filters[param(column)] = input.value; state.page = 1; refresh(); };
    input.addEventListener(input.tagName === 'SELECT' ? 'change' : 'input', input.tagName === 'SELECT' ? changed : debounce(changed, 300));
    return field(column.label, input);
  });
  clear(filterPanel, filterControls,
    h('button', {type: 'button', class: 'link', onclick: () => {
      state.filters = {};
      state.search = '';
      searchBox.value = '';
      for (const control of filterPanel.querySelectorAll('[data-filter]')) control.value = '';
      state.page = 1;
      refresh();
    }}, 'Clear all filters'));
  filterToggle.addEventListener('click', () => {
    filterPanel.hidden = !filterPanel.hidden;
    filterToggle.setAttribute('aria-expanded', String(!filterPanel.hidden));
  });
  searchBox.addEventListener('input', debounce(() => { state.search = searchBox.value.trim(); state.page = 1; refresh(); }, 300));

  function filters() {
    const out = [];
    const searchColumn = spec.search || 'name';
    if (state.search) out.push(searchColumn, {'~': `%${state.search}%`});
    for (const column of filterable) {
      const value = condition(column, state.filters[param(column)]);
      if (value !== null) out.push(column.field, value);
    }
    return out.concat(spec.fixedFilters ? spec.fixedFilters() : []);
  }

  // -- columns, order -------------------------------------------------------------------
  function visibleColumns() {
    // The API answers only the fields this administrator may see: show those columns.
    const sample = state.rows[0];
    return spec.columns.filter((c) => (!c.when || c.when()) && (!sample || c.field in sample));
  }

  function drawHead() {
    const cells = selectable ? [h('th', {scope: 'col', class: 'select'}, pageAll)] : [];
    for (const column of visibleColumns()) {
      const orderName = column.order === true ? column.field : column.order;
      if (!orderName) { cells.push(h('th', {scope: 'col'}, column.label)); continue; }
      const sorted = state.order === orderName;
      cells.push(h('th', {scope: 'col', 'aria-sort': sorted ? (state.desc ? 'descending' : 'ascending') : 'none'},
        h('button', {type: 'button', class: 'sort', onclick: () => {
          state.desc = sorted ? !state.desc : false;
          state.order = orderName;
          refresh();
        }}, column.label, h('span', {'aria-hidden': 'true'}, sorted ? (state.desc ? ' ▼' : ' ▲') : ''))));
    }
    clear(head, cells);
  }

  // -- rows -----------------------------------------------------------------------------
  function drawRows() {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focus : null;
    const columns = visibleColumns();
    if (!state.rows.length) {
      clear(body, h('tr', {}, h('td', {colspan: columns.length + (selectable ? 1 : 0), class: 'empty'},
        state.loaded ? (filters().length ? 'Nothing matches these filters.' : `No ${spec.title.toLowerCase()} yet.`) : 'Loading…')));
    } else {
      clear(body, state.rows.map((row) => {
        const key = row[idKey];
        const box = h('input', {type: 'checkbox', checked: state.allMatching || state.selected.has(key),
          disabled: state.allMatching, 'aria-label': `Select ${spec.label(row)}`, dataset: {focus: `select-${key}`}});
        box.addEventListener('change', () => {
          if (box.checked) state.selected.add(key); else state.selected.delete(key);
          drawSelection();
        });
        const cells = selectable ? [h('td', {class: 'select'}, box)] : [];
        for (const column of columns) {
          const value = row[column.field];
          let content = column.render ? column.render(value, row) : render.text(value);
          if (column.opens && spec.open) {
            content = h('button', {type: 'button', class: 'link', dataset: {focus: `open-${key}`},
              onclick: () => spec.open(row).then((done) => { if (done) { toast(`${spec.noun} saved`); refresh(); } })},
            content || `#${key}`);
          }
          cells.push(h('td', {dataset: {column: column.field}}, content));
        }
        return h('tr', {dataset: {id: String(key)}}, cells);
      }));
    }
    if (focused) body.querySelector(`[data-focus="${focused}"]`)?.focus();
  }

  function drawSelection() {
    const onPage = state.rows.map((r) => r[idKey]);
    const pageSelected = onPage.length > 0 && onPage.every((id) => state.selected.has(id));
    pageAll.checked = state.allMatching || pageSelected;
    pageAll.disabled = state.allMatching || onPage.length === 0;
    const n = state.allMatching ? state.total : state.selected.size;
    selectionText.textContent = n ? `${formatNumber(n)} selected` : 'Select rows to act on them.';
    allMatchingButton.hidden = state.allMatching || !pageSelected || state.total <= onPage.length;
    allMatchingButton.textContent = `Select all ${formatNumber(state.total)} matching`;
    clearSelection.hidden = n === 0;
    for (const button of actionBar.querySelectorAll('button')) {
      button.disabled = n === 0;
      button.title = n === 0 ? 'Select rows first' : '';
    }
  }

  pageAll.addEventListener('change', () => {
    for (const row of state.rows) {
      if (pageAll.checked) state.selected.add(row[idKey]); else state.selected.delete(row[idKey]);
    }
    drawRows();
    drawSelection();
  });
  allMatchingButton.addEventListener('click', () => { state.allMatching = true; drawRows(); drawSelection(); });
  clearSelection.addEventListener('click', () => { state.allMatching = false; state.selected.clear(); drawRows(); drawSelection(); });

  // -- mass actions ---------------------------------------------------------------------
  clear(actionBar, actions.map((a) => h('button', {type: 'button', class: a.danger ? 'danger' : '',
    onclick: () => act(a)}, a.label)));

  // The ids to act on: the selection, or (as qa4 does) every id the filters match, so
  // that the change selects by id whatever filters its action accepts.
  async function chosenIds() {
    if (!state.allMatching) return [...state.selected];
    const answer = await call(spec.list, {filters: filters(), fields: [idKey], block: Math.max(1, state.total)});
    return answer.rows.map((r) => r[idKey]);
  }

  // One action on the chosen objects, CHUNK ids per request; the objects that failed
  // (status 1200) are gathered into one refusal.
  async function actOn(a, ids) {
    let partial = null;
    for (let i = 0; i < ids.length; i += CHUNK) {
      const part = ids.slice(i, i + CHUNK);
      try {
        await call(a.action, {filters: {[idKey]: part}, block: part.length, arguments: a.arguments});
      } catch (e) {
        if (!(e instanceof ApiError) || !e.failures) throw e;
        if (partial) Object.assign(partial.failures, e.failures); else partial = e;
      }
    }
    if (partial) throw partial;
  }

  async function act(a) {
    const n = state.allMatching ? state.total : state.selected.size;
    if (!n) return;
    const what = `${formatNumber(n)} ${n === 1 ? spec.noun : spec.nouns}`;
    if (a.danger && !await confirm(`${a.label} ${what}?`, a.warning || 'This cannot be undone.', a.label)) return;
    hideAlert();
    try {
      await actOn(a, await chosenIds());
      toast(`${a.done || a.label}: ${what}`);
      if (a.clears) { state.selected.clear(); state.allMatching = false; }
      refresh();  // not every change is announced to live lists (tenants, roles, ...)
    } catch (e) {
      showAlert(describe(e));
      refresh({keepAlert: true});  // some objects may have changed all the same
    }
  }

  function showAlert(textValue) { clear(alert, textValue); alert.hidden = false; }
  function hideAlert() { alert.hidden = true; }

  // -- paging ---------------------------------------------------------------------------
  previous.addEventListener('click', () => { if (state.page > 1) { state.page -= 1; refresh(); } });
  next.addEventListener('click', () => { state.page += 1; refresh(); });
  const goToPage = () => {
    const wanted = Math.max(1, Number(pageInput.value) || 1);
    if (wanted !== state.page) { state.page = wanted; refresh(); }
  };
  pageInput.addEventListener('change', goToPage);
  pageInput.addEventListener('keydown', (e) => { if (e.key === 'Enter') goToPage(); });
  sizeSelect.addEventListener('change', () => { state.block = Number(sizeSelect.value); state.page = 1; refresh(); });

  function drawPager() {
    const last = Math.max(1, Math.ceil(state.total / state.block));
    pages.textContent = formatNumber(last);
    pageInput.max = last;
    pageInput.value = state.page;
    previous.disabled = state.page <= 1;
    next.disabled = state.page >= last;
    count.textContent = state.loaded ? `${formatNumber(state.total)} in all` : '';
    caption.textContent = `${spec.title}, page ${state.page} of ${last}`;
  }

  // -- the live query -------------------------------------------------------------------
  function remember() {
    const out = new URLSearchParams();
    if (state.search) out.set('q', state.search);
    for (const [k, v] of Object.entries(state.filters)) if (v !== '') out.set(k, v);
    if (state.order && state.order !== spec.order) out.set('order', state.order);
    if (state.order && state.desc !== Boolean(spec.desc && state.order === spec.order)) out.set('dir', state.desc ? 'desc' : 'asc');
    if (state.page > 1) out.set('page', state.page);
    if (state.block !== session.pageSize) out.set('block', state.block);
    const hash = `#/${spec.route}${out.toString() ? `?${out}` : ''}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  function refresh({keepAlert = false} = {}) {
    remember();
    if (live) live.close();
    if (!keepAlert) hideAlert();
    table.setAttribute('aria-busy', 'true');
    const query = {filters: filters(), offset: state.page, block: state.block};
    if (spec.fields) query.fields = spec.fields;
    if (state.order) query.order_by = {field: state.order, order: state.desc ? '-desc' : '-asc'};
    live = new Live(spec.list, query, (answer) => {
      table.removeAttribute('aria-busy');
      state.rows = answer.rows || [];
      state.total = answer.total || 0;
      state.loaded = true;
      const last = Math.max(1, Math.ceil(state.total / state.block));
      if (state.page > last) { state.page = last; refresh(); return; }
      drawHead();
      drawRows();
      drawSelection();
      drawPager();
    }, (error) => {
      table.removeAttribute('aria-busy');
      state.loaded = true;
      showAlert(describe(error));
      drawRows();
    });
    drawHead();
    drawPager();
  }

  refresh();
  drawSelection();
  return {element, focus: () => heading.focus(), destroy: () => { if (live) live.close(); }};
}
