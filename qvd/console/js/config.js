// Configuration keys (config_get/config_set/config_delete).  As in QVD's WAT the API never
// lists internal.*, vma.*, client.* or database.* keys and refuses to set them: what an
// administrator should not touch is not offered, and an attempt is refused in words.
import {call} from './api.js';
import {h, clear, field, select, describe, toast, debounce, formatNumber, dialog} from './dom.js';
import {session} from './session.js';
import {tenantOptions} from './forms.js';

const GLOBAL = -1;

export function configPage(params) {
  const heading = h('h1', {tabindex: '-1'}, 'Configuration');
  const alert = h('div', {class: 'alert', role: 'alert', hidden: true});
  const searchBox = h('input', {type: 'search', value: params.get('q') || '', placeholder: 'Key contains…'});
  const tenantSelect = select([[GLOBAL, 'Global (every tenant)']], GLOBAL);
  const body = h('tbody');
  const count = h('span', {class: 'count', 'aria-live': 'polite'});
  const pager = h('nav', {class: 'pager', 'aria-label': 'Pages of configuration keys'});
  const editable = session.can('config_set');
  let page = 1;
  const block = 50;

  if (session.superadmin) {
    tenantOptions().then((items) => {
      for (const [id, label] of items) if (id > 0) tenantSelect.append(h('option', {value: String(id)}, label));
    }).catch(() => {});
  }

  function showError(error) { clear(alert, describe(error)); alert.hidden = false; }

  async function load() {
    alert.hidden = true;
    const filters = [];
    if (searchBox.value.trim()) filters.push('key', {'~': `%${searchBox.value.trim()}%`});
    if (session.superadmin) filters.push('tenant_id', Number(tenantSelect.value));
    try {
      const answer = await call('config_get', {filters, offset: page, block});
      draw(answer);
    } catch (e) {
      showError(e);
    }
  }

  function draw(answer) {
    count.textContent = `${formatNumber(answer.total)} keys`;
    clear(body, answer.rows.map((row) => {
      const input = h('input', {type: 'text', value: row.operative_value ?? '', disabled: !editable,
        'aria-label': `Value of ${row.key}`});
      const save = h('button', {type: 'button', disabled: !editable, onclick: async () => {
        try {
          await call('config_set', {arguments: {tenant_id: row.tenant_id, key: row.key, value: input.value}});
          toast(`${row.key} saved`);
          load();
        } catch (e) { showError(e); }
      }}, 'Save');
      const reset = Number(row.is_default) ? null : h('button', {type: 'button', disabled: !session.can('config_delete'),
        onclick: async () => {
          try {
            await call('config_delete', {filters: {key: row.key, tenant_id: row.tenant_id}});
            toast(`${row.key} is back to its default`);
            load();
          } catch (e) { showError(e); }
        }}, 'Reset to default');
      input.addEventListener('keydown', (e) => { if (e.key === 'Enter') save.click(); });
      return h('tr', {dataset: {key: row.key}},
        h('th', {scope: 'row'}, h('code', {}, row.key)),
        h('td', {}, input),
        h('td', {}, h('code', {}, row.default_value ?? '')),
        h('td', {}, Number(row.is_default) ? 'default' : h('strong', {}, 'changed')),
        h('td', {class: 'row-actions'}, save, reset));
    }));
    const last = Math.max(1, Math.ceil(answer.total / block));
    clear(pager,
      h('button', {type: 'button', disabled: page <= 1, onclick: () => { page -= 1; load(); }}, 'Previous'),
      ` Page ${page} of ${last} `,
      h('button', {type: 'button', disabled: page >= last, onclick: () => { page += 1; load(); }}, 'Next'));
  }

  async function addKey() {
    const key = h('input', {type: 'text', required: true});
    const value = h('input', {type: 'text'});
    await dialog('Set a configuration key', [field('Key', key), field('Value', value)], {
      submit: 'Set',
      onSubmit: async () => {
        const args = {key: key.value.trim(), value: value.value};
        if (session.superadmin) args.tenant_id = Number(tenantSelect.value);
        await call('config_set', {arguments: args});
        toast(`${args.key} saved`);
        load();
        return true;
      },
    });
  }

  searchBox.addEventListener('input', debounce(() => { page = 1; load(); }, 300));
  tenantSelect.addEventListener('change', () => { page = 1; load(); });
  const element = h('section', {class: 'page'},
    h('div', {class: 'page-head'}, heading, count,
      editable ? h('button', {type: 'button', class: 'primary', onclick: addKey}, 'Set a key') : null),
    alert,
    h('div', {class: 'toolbar'}, field('Search keys', searchBox),
      session.superadmin ? field('Tenant', tenantSelect) : null),
    h('div', {class: 'table-wrap'}, h('table', {},
      h('caption', {class: 'sr-only'}, 'Configuration keys'),
      h('thead', {}, h('tr', {}, ['Key', 'Value', 'Default', 'Status', ''].map((t) => h('th', {scope: 'col'}, t)))),
      body)),
    pager);
  load();
  return {element, focus: () => heading.focus(), destroy: () => {}};
}
