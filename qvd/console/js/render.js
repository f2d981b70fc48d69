// How values look in lists and details: states as badges, flags in words, tags as chips.
import {h, formatNumber} from './dom.js';

export function text(value) {
  if (value === null || value === undefined || value === '') return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return typeof value === 'number' ? formatNumber(value) : String(value);
}

export function state(value) {
  if (!value) return '';
  return h('span', {class: `badge state-${value}`}, value);
}

export function flag(yes, no = '') {
  return (value) => (Number(value) ? h('span', {class: 'badge flag'}, yes) : no);
}

export const blocked = flag('blocked');

export function yesNo(value) { return Number(value) ? 'yes' : 'no'; }

export function tags(value) {
  if (!Array.isArray(value)) return '';
  return h('span', {class: 'chips'}, value.map((t) => h('span', {class: Number(t.fixed) ? 'chip fixed' : 'chip'}, t.tag)));
}

// {id: name} or {id: {name, ...}} as a list of names
export function names(value) {
  if (!value || typeof value !== 'object') return '';
  return Object.values(value).map((v) => (typeof v === 'object' && v ? v.name : v)).join(', ');
}

export function megabytes(value) {
  if (value === null || value === undefined) return '';
  return `${formatNumber(Math.round(Number(value)))} MB`;
}

export function share(value) {
  if (value === null || value === undefined) return '';
  return formatNumber(Math.round(Number(value)));
}

export function diState(value, row) {
  if (!value) return '';
  const badge = state(value);
  if (value === 'uploading' && row.percentage) return [badge, ` ${Math.round(row.percentage)}%`];
  if (value === 'fail' && row.status_message) return [badge, ' ', h('span', {class: 'muted'}, row.status_message)];
  return badge;
}

export function status(value) {
  return Number(value) === 0 ? h('span', {class: 'badge state-running'}, 'ok')
    : h('span', {class: 'badge state-fail'}, `failed (${value})`);
}
