// Forage web UI: a small single-page app over the /v1 JSON API (docs/forage-api.md).
// Plain JS, no build step, no external URLs. The route lives in the hash (#/feed, #/search,
// #/labels, #/sources, #/saved, #/history); a view is rebuilt from API answers when the route changes, and
// feedback updates cards in place, so the page never reloads.
// This file owns the shell (helpers, API client, router, stats, export, keyboard) and the
// feed and search views; manage.js adds the labels and sources views to `views`.
// Invariant: cards change state (liked, removed) only after the API acknowledged the
// feedback, so what the page shows is what reached Tidal.
'use strict';

const TOKEN_KEY = 'forage.token';
const FEED_LIMIT = 20;
const FEED_REFILL_MIN = 3; // load the next page when fewer cards than this remain
const SEARCH_LIMIT = 50;
const TOAST_MS = 3500;
const TOKEN_ATTEMPTS_MAX = 3;

const state = { feedContext: null, cursor: null, filters: {}, selected: 0, loading: false };
const cardContext = new WeakMap(); // card element -> the feed `context` it was shown in
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k === 'className' ? 'class' : k, v === true ? '' : String(v));
  }
}

function toast(message, kind = 'info') {
  const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? TOAST_MS * 2 : TOAST_MS);
}

// Wraps an event handler so that a failed API call ends in a toast, not an unhandled rejection.
const guard = (fn) => async (...args) => {
  try {
    return await fn(...args);
  } catch (e) {
    showError(e);
  }
};

function showError(e, form) {
  toast(e.message || String(e), 'error');
  const input = form && e.field ? form.elements.namedItem(e.field) : null;
  if (input && input.focus) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
}

const pct = (x) => `${(100 * (x || 0)).toFixed(1)}%`;
const num = (x, digits = 2) => (Number.isFinite(x) ? Number(x.toFixed(digits)).toString() : '–');

function timeAgo(ms) {
  if (!ms) return 'never';
  const s = Math.round((ms - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const steps = [[60, 'second'], [60, 'minute'], [24, 'hour'], [30, 'day'], [12, 'month']];
  let v = s;
  for (const [size, unit] of steps) {
    if (Math.abs(v) < size) return rtf.format(v, unit);
    v = Math.round(v / size);
  }
  return rtf.format(v, 'year');
}

const timeEl = (ms) =>
  ms ? h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, timeAgo(ms))
    : 'never';

// ---- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, field = null, status = 0) {
    super(message);
    Object.assign(this, { code, field, status });
  }
}

function storedToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

let tokenWaiter = null;
function askToken() {
  // Concurrent 401s share one prompt.
  tokenWaiter ??= new Promise((resolve) => {
    const dialog = $('#token-dialog');
    const form = $('#token-form');
    const input = $('#token-input');
    input.value = storedToken();
    form.onsubmit = (e) => {
      e.preventDefault();
      try { localStorage.setItem(TOKEN_KEY, input.value.trim()); } catch { /* private mode */ }
      dialog.close();
      tokenWaiter = null;
      resolve();
    };
    dialog.showModal();
    input.focus();
  });
  return tokenWaiter;
}

async function api(method, path, body, { raw = false, type = 'application/json' } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: 'application/json' };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      headers['Content-Type'] = type;
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload });
    } catch (e) {
      throw new ApiError('network', `Network error: ${e.message}`);
    }
    if (res.status === 401 && attempt < TOKEN_ATTEMPTS_MAX) {
      await askToken();
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    if (raw) return res;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

async function errorOf(res) {
  try {
    const { error } = await res.json();
    return new ApiError(error.code, error.message, error.field, res.status);
  } catch {
    return new ApiError('http', `${res.status} ${res.statusText || 'error'}`, null, res.status);
  }
}

// ---- Router ------------------------------------------------------------------------------

// Route name -> render(root, params); manage.js registers `labels` and `sources`.
const views = { feed: renderFeed, search: renderSearch };

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, query = ''] = raw.split('?');
  return { name: views[name] ? name : 'feed', params: new URLSearchParams(query) };
}

async function route() {
  const { name, params } = parseHash();
  for (const a of $$('nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `Forage · ${name[0].toUpperCase()}${name.slice(1)}`;
  // Each view renders into its own root: answers that arrive after the user moved on land in
  // a detached element and do no harm.
  const root = h('div', { class: `view view-${name}` });
  $('#view').replaceChildren(root);
  document.body.dataset.view = name;
  state.selected = 0;
  try {
    await views[name](root, params);
  } catch (e) {
    showError(e);
    root.append(h('p', { class: 'empty' }, `Could not load this page: ${e.message}`));
  }
}

// ---- Stats strip -------------------------------------------------------------------------

let statsTimer = 0;
function refreshStats(delay = 0) {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(guard(async () => {
    const s = await api('GET', '/v1/stats');
    const f = s.feedback || {};
    $('#stats').replaceChildren(
      h('span', {}, 'Like rate ', h('strong', { id: 'stat-like-rate' }, pct(f.like_rate))),
      h('span', {}, h('strong', { id: 'stat-impressions' }, f.impressions ?? 0), ' impressions'),
      h('span', {}, h('strong', {}, f.likes ?? 0), ' likes · ', h('strong', {}, f.dislikes ?? 0),
        ' dislikes · ', h('strong', {}, f.skips ?? 0), ' skips'),
      h('span', {}, h('strong', {}, s.items ?? 0), ' items'));
  }), delay);
}

// ---- Item cards (feed and search) --------------------------------------------------------

function itemCard(item, context) {
  const title = item.title || '(untitled)';
  const titleId = `t-${Math.random().toString(36).slice(2)}`;
  const heading = item.url
    ? h('a', { href: item.url, target: '_blank', rel: 'noopener noreferrer', class: 'title', id: titleId })
    : h('span', { class: 'title', id: titleId });
  heading.append(title);
  const card = h('article', { class: 'card', 'data-item': item.id, tabindex: '-1', 'aria-labelledby': titleId },
    h('h2', {}, heading),
    h('p', { class: 'meta' }, h('span', { class: 'source' }, item.source_title || `Source ${item.source_id}`),
      item.published_ms ? [' · ', timeEl(item.published_ms)] : null),
    item.summary ? h('p', { class: 'summary' }, item.summary) : null,
    h('div', { class: 'chips' }, (item.labels || []).map((l) => labelChip(item, l))),
    h('div', { class: 'actions' },
      actionButton(item, 'like', 'Like', 'l'),
      actionButton(item, 'dislike', 'Dislike', 'd'),
      actionButton(item, 'skip', 'Skip', 's'),
      h('button', { type: 'button', class: 'save secondary', 'data-action': 'save', 'data-item': item.id,
        'aria-label': `Save for later: ${item.title || item.id}`, title: 'Save for later (v)',
        onclick: (e) => saveCard(e.currentTarget.closest('.card')) }, 'Save', h('kbd', { 'aria-hidden': 'true' }, 'v'))));
  if (context !== undefined && context !== null) cardContext.set(card, context);
  if (item.url) {
    const opened = () => sendFeedback(card, 'open', { quiet: true });
    heading.addEventListener('click', opened);
    heading.addEventListener('auxclick', (e) => e.button === 1 && opened());
  }
  card.addEventListener('focusin', () => select(cards().indexOf(card), { focus: false }));
  card.addEventListener('click', () => select(cards().indexOf(card), { focus: false }));
  return card;
}

function actionButton(item, action, text, key) {
  return h('button', {
    type: 'button', class: action, 'data-action': action, 'data-item': item.id,
    'aria-label': `${text}: ${item.title || item.id}`, title: `${text} (${key})`,
    onclick: (e) => sendFeedback(e.currentTarget.closest('.card'), action),
  }, text, h('kbd', { 'aria-hidden': 'true' }, key));
}

function labelChip(item, label) {
  return h('button', {
    type: 'button', class: 'chip', 'data-label': label.id, 'data-item': item.id, 'aria-haspopup': 'true',
    title: `Label score ${num(label.score)}: confirm or reject`,
    onclick: (e) => { e.stopPropagation(); openChipMenu(e.currentTarget, item, label); },
  }, label.name);
}

function openChipMenu(chip, item, label) {
  $$('.chip-menu').forEach((m) => m.remove());
  const answer = (confirm) => guard(async () => {
    await api('POST', `/v1/labels/${encodeURIComponent(label.id)}/feedback`, { item: item.id, confirm });
    menu.remove();
    if (confirm) chip.classList.add('confirmed');
    else chip.remove();
    toast(confirm ? `Confirmed “${label.name}”` : `Removed “${label.name}” from this item`);
  });
  const menu = h('div', { class: 'chip-menu', role: 'group', 'aria-label': `Label ${label.name}` },
    h('span', {}, `Is this “${label.name}”?`),
    h('button', { type: 'button', class: 'confirm', onclick: answer(true) }, 'Yes'),
    h('button', { type: 'button', class: 'reject', onclick: answer(false) }, 'No'),
    h('button', { type: 'button', class: 'secondary', 'aria-label': 'Close', onclick: () => menu.remove() }, '×'));
  chip.parentElement.after(menu);
  $('button', menu).focus();
}

const FEEDBACK_VERB = { like: 'Liked', dislike: 'Disliked', skip: 'Skipped', open: 'Opened' };

async function sendFeedback(card, kind, { quiet = false } = {}) {
  if (!card || card.classList.contains('leaving')) return;
  const body = { item: card.dataset.item, kind };
  if (cardContext.has(card)) body.context = cardContext.get(card);
  card.setAttribute('aria-busy', 'true');
  let answer;
  try {
    answer = await api('POST', '/v1/feedback', body);
  } catch (e) {
    showError(e);
    return;
  } finally {
    card.removeAttribute('aria-busy');
  }
  if (kind === 'like') {
    card.classList.add('liked');
    card.classList.remove('disliked');
    $('button.like', card)?.setAttribute('aria-pressed', 'true');
  } else if (kind === 'dislike' || kind === 'skip') {
    card.classList.add(kind === 'dislike' ? 'disliked' : 'skipped');
    removeCard(card);
  }
  if (!quiet) {
    const title = $('.title', card)?.textContent || body.item;
    toast(`${FEEDBACK_VERB[kind]} “${title}”${answer?.duplicate ? ' (already counted)' : ''}`);
  }
  refreshStats(300);
}

async function saveCard(card) {
  if (!card) return;
  try {
    await api('POST', '/v1/saved', { item: card.dataset.item });
  } catch (e) {
    showError(e);
    return;
  }
  card.classList.add('saved');
  $('button.save', card)?.setAttribute('aria-pressed', 'true');
  toast(`Saved “${$('.title', card)?.textContent || card.dataset.item}” for later`);
}

function removeCard(card) {
  const index = cards().indexOf(card);
  card.classList.add('leaving');
  setTimeout(() => {
    card.remove();
    select(Math.min(index, cards().length - 1), { focus: false });
    const more = $('#feed-more');
    if (more && !more.hidden && cards().length < FEED_REFILL_MIN) more.click();
  }, 160);
}

// The active card list: the feed or the search results, whichever view is shown.
const cards = () => $$('#view .cards .card:not(.leaving)');

function select(index, { focus = true } = {}) {
  const all = cards();
  if (!all.length || index < 0) return;
  state.selected = Math.max(0, Math.min(index, all.length - 1));
  all.forEach((c, i) => c.classList.toggle('selected', i === state.selected));
  const card = all[state.selected];
  card.scrollIntoView({ block: 'nearest' });
  if (focus) card.focus({ preventScroll: true });
}

function openSelected() {
  const card = cards()[state.selected];
  const link = card && $('a.title', card);
  if (!link) return;
  window.open(link.href, '_blank', 'noopener');
  sendFeedback(card, 'open', { quiet: true });
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || $('dialog[open]')) return;
  if (e.target.closest?.('input, textarea, select, [contenteditable]')) {
    if (e.key === 'Escape') e.target.blur();
    return;
  }
  if (e.key === '/') {
    e.preventDefault();
    $('#search-q').focus();
    return;
  }
  const actions = {
    j: () => select(state.selected + 1), k: () => select(state.selected - 1), o: openSelected,
    l: () => sendFeedback(cards()[state.selected], 'like'),
    d: () => sendFeedback(cards()[state.selected], 'dislike'),
    s: () => sendFeedback(cards()[state.selected], 'skip'),
    v: () => saveCard(cards()[state.selected]),
  };
  if (!actions[e.key] || !cards().length) return;
  e.preventDefault();
  actions[e.key]();
}

// ---- Feed --------------------------------------------------------------------------------

async function renderFeed(root, params) {
  Object.assign(state, { feedContext: null, cursor: null, loading: false });
  state.filters = { label: params.get('label') || '', source: params.get('source') || '' };
  const list = h('div', { id: 'feed-list', class: 'cards' });
  const more = h('button', { id: 'feed-more', type: 'button', class: 'secondary more', hidden: true },
    'More');
  more.addEventListener('click', guard(() => loadFeed(list, more)));
  const labelSel = h('select', { id: 'filter-label', name: 'label' }, h('option', { value: '' }, 'All labels'));
  const sourceSel = h('select', { id: 'filter-source', name: 'source' }, h('option', { value: '' }, 'All sources'));
  const onFilter = () => {
    const q = new URLSearchParams();
    if (labelSel.value) q.set('label', labelSel.value);
    if (sourceSel.value) q.set('source', sourceSel.value);
    location.hash = `#/feed${q.size ? `?${q}` : ''}`;
  };
  labelSel.addEventListener('change', onFilter);
  sourceSel.addEventListener('change', onFilter);
  root.append(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Feed'),
      h('label', { for: 'filter-label' }, 'Label'), labelSel,
      h('label', { for: 'filter-source' }, 'Source'), sourceSel),
    h('p', { class: 'hint' }, 'Keys: ', h('kbd', {}, 'j'), '/', h('kbd', {}, 'k'), ' move · ',
      h('kbd', {}, 'l'), ' like · ', h('kbd', {}, 'd'), ' dislike · ', h('kbd', {}, 's'), ' skip · ',
      h('kbd', {}, 'v'), ' save · ',
      h('kbd', {}, 'o'), ' open · ', h('kbd', {}, '/'), ' search'),
    list, more);
  fillFilters(labelSel, sourceSel).catch(showError);
  await loadFeed(list, more);
}

async function fillFilters(labelSel, sourceSel) {
  const [{ labels }, { sources }] = await Promise.all([api('GET', '/v1/labels'), api('GET', '/v1/sources')]);
  labelSel.append(...labels.map((l) => h('option', { value: l.id }, `${l.name} (${l.items})`)));
  sourceSel.append(...sources.map((s) => h('option', { value: s.id }, s.title || s.url)));
  labelSel.value = state.filters.label;
  sourceSel.value = state.filters.source;
}

async function loadFeed(list, more) {
  if (state.loading) return;
  state.loading = true;
  more.disabled = true;
  list.setAttribute('aria-busy', 'true');
  try {
    const q = new URLSearchParams({ limit: FEED_LIMIT });
    if (state.cursor) q.set('cursor', state.cursor);
    for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
    const page = await api('GET', `/v1/feed?${q}`);
    state.feedContext = page.context;
    state.cursor = page.next_cursor ?? null;
    list.append(...page.items.map((it) => itemCard(it, page.context)));
    $('.empty', list)?.remove();
    $('#feed-exhausted')?.remove();
    if (page.exhausted) {
      list.append(h('p', { id: 'feed-exhausted', class: 'empty', role: 'status' },
        `You have seen everything here (${page.seen} items shown so far). Add or refresh sources for new ones; `,
        h('a', { href: '#/saved' }, 'Saved'), ' and ', h('a', { href: '#/history' }, 'History'),
        ' keep what you were shown.'));
    } else if (!cards().length) {
      list.append(h('p', { class: 'empty' }, 'Nothing to show. Add sources or refresh them.'));
    }
    more.hidden = !state.cursor;
    select(state.selected, { focus: false });
  } finally {
    state.loading = false;
    more.disabled = false;
    list.removeAttribute('aria-busy');
  }
}

// ---- Search ------------------------------------------------------------------------------

async function renderSearch(root, params) {
  const q = params.get('q') || '';
  $('#search-q').value = q;
  root.append(h('h1', {}, q ? `Search: ${q}` : 'Search'));
  if (!q) {
    root.append(h('p', { class: 'empty' }, 'Type in the search box above (press / to focus it).'));
    return;
  }
  const list = h('div', { id: 'search-results', class: 'cards' });
  root.append(list);
  const { items } = await api('GET', `/v1/search?${new URLSearchParams({ q, limit: SEARCH_LIMIT })}`);
  list.append(...items.map((it) => itemCard(it, null)));
  if (!items.length) list.append(h('p', { class: 'empty' }, `No items match “${q}”.`));
  select(0, { focus: false });
}

// ---- Export ------------------------------------------------------------------------------

async function exportData() {
  const format = $('#export-format').value;
  const res = await api('GET', `/v1/export?${new URLSearchParams({ format })}`, undefined, { raw: true });
  const blob = await res.blob();
  const disposition = res.headers.get('Content-Disposition') || '';
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] || `forage-${format}.jsonl`;
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
  toast(`Exported ${name} (${blob.size} bytes)`);
}

// ---- Start -------------------------------------------------------------------------------

function start() {
  document.addEventListener('keydown', onKey);
  window.addEventListener('hashchange', route);
  $('#export').addEventListener('click', guard(exportData));
  $('#search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('#search-q').value.trim();
    location.hash = q ? `#/search?${new URLSearchParams({ q })}` : '#/search';
  });
  document.addEventListener('click', (e) => {
    if (!e.target.closest('.chip-menu, .chip')) $$('.chip-menu').forEach((m) => m.remove());
  });
  if (!location.hash) history.replaceState(null, '', '#/feed');
  route();
  refreshStats();
}

// Deferred scripts run in order before DOMContentLoaded, so manage.js has registered its views.
document.addEventListener('DOMContentLoaded', start);
