// Forage web UI, management pages: labels (create, edit, delete) and sources (add, OPML
// import, refresh, remove, each arm's Beta posterior drawn as an SVG chart), the saved list
// and the history (what was shown, liked, opened). Uses the shell's
// helpers from app.js (h, setAttrs, api, toast, guard, showError, num, timeEl) and registers its
// views in `views`; index.html loads it after app.js.
'use strict';

const CHART = { w: 240, h: 72, pad: 4, points: 160 };
const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

// ---- Labels ------------------------------------------------------------------------------

async function renderLabels(root) {
  const list = h('div', { id: 'label-list', class: 'labels' });
  const form = labelForm(() => reloadLabels(list, form));
  root.append(h('h1', {}, 'Labels'), form, list);
  await reloadLabels(list, form);
}

function labelForm(onSaved) {
  const form = h('form', { id: 'label-form', class: 'panel' },
    h('h2', { id: 'label-form-title' }, 'New label'),
    h('label', { for: 'label-name' }, 'Name'),
    h('input', { id: 'label-name', name: 'name', required: true, maxlength: 64, autocomplete: 'off' }),
    h('label', { for: 'label-examples' }, 'Examples (one per line)'),
    h('textarea', { id: 'label-examples', name: 'examples', rows: 4 }),
    h('label', { for: 'label-threshold' }, 'Threshold (empty: calibrated from the examples)'),
    h('input', { id: 'label-threshold', name: 'threshold', type: 'number', min: 0.01, max: 0.99, step: 0.01,
      placeholder: 'calibrated' }),
    h('div', { class: 'row' },
      h('button', { type: 'submit', id: 'label-save' }, 'Create label'),
      h('button', { type: 'reset', class: 'secondary' }, 'Cancel')));
  form.addEventListener('reset', () => setTimeout(() => editLabel(form, null)));
  form.addEventListener('input', (e) => e.target.removeAttribute('aria-invalid'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = form.dataset.editing;
    const body = {
      name: form.elements.name.value.trim(),
      examples: form.elements.examples.value.split('\n').map((s) => s.trim()).filter(Boolean),
    };
    const threshold = form.elements.threshold.value.trim();
    if (threshold) body.threshold = Number(threshold);
    else if (id) body.calibrated = true;
    try {
      if (id) await api('PUT', `/v1/labels/${encodeURIComponent(id)}`, body);
      else await api('POST', '/v1/labels', body);
    } catch (err) {
      showError(err, form);
      return;
    }
    toast(id ? `Saved “${body.name}”` : `Created “${body.name}”`);
    form.reset();
    await onSaved().catch(showError);
  });
  return form;
}

function editLabel(form, label) {
  if (label) form.dataset.editing = label.id;
  else delete form.dataset.editing;
  $('#label-form-title', form).textContent = label ? `Edit “${label.name}”` : 'New label';
  $('#label-save', form).textContent = label ? 'Save changes' : 'Create label';
  if (!label) return;
  form.elements.name.value = label.name;
  form.elements.examples.value = (label.examples || []).join('\n');
  form.elements.threshold.value = label.calibrated ? '' : num(label.threshold);
  form.scrollIntoView({ block: 'nearest' });
  form.elements.name.focus();
}

async function reloadLabels(list, form) {
  const { labels } = await api('GET', '/v1/labels');
  list.replaceChildren(...labels.map((l) => labelRow(l, list, form)));
  if (!labels.length) list.append(h('p', { class: 'empty' }, 'No labels yet. Create one above.'));
}

function labelRow(label, list, form) {
  const remove = guard(async () => {
    if (!window.confirm(`Delete the label “${label.name}”?`)) return;
    await api('DELETE', `/v1/labels/${encodeURIComponent(label.id)}`);
    toast(`Deleted “${label.name}”`);
    await reloadLabels(list, form);
  });
  return h('article', { class: 'label-row panel', 'data-label': label.id },
    h('h2', {}, label.name, ' ', h('span', { class: 'count', title: 'items carrying this label' },
      `${label.items} items`)),
    h('p', { class: 'meta' }, label.calibrated ? 'calibrated threshold' : `threshold ${num(label.threshold)}`,
      label.strict ? ' (strict)' : '', ` · ${label.confirmed} confirmed · `,
      `${label.rejected} rejected`),
    label.examples?.length ? h('ul', { class: 'examples' }, label.examples.map((x) => h('li', {}, x))) : null,
    h('div', { class: 'actions' },
      h('a', { class: 'button secondary', href: `#/feed?label=${encodeURIComponent(label.id)}` }, 'Show in feed'),
      h('button', { type: 'button', class: 'secondary', 'data-action': 'edit',
        'aria-label': `Edit ${label.name}`, onclick: () => editLabel(form, label) }, 'Edit'),
      h('button', { type: 'button', class: 'danger', 'data-action': 'delete',
        'aria-label': `Delete ${label.name}`, onclick: remove }, 'Delete')));
}

// ---- Sources -----------------------------------------------------------------------------

async function renderSources(root) {
  const list = h('div', { id: 'source-list', class: 'sources' });
  const reload = () => reloadSources(list);
  const addForm = h('form', { id: 'add-source', class: 'inline' },
    h('label', { for: 'source-url' }, 'Add source'),
    h('input', { id: 'source-url', name: 'url', required: true, inputmode: 'url', autocomplete: 'off',
      placeholder: 'https://example.org/feed.xml' }),
    h('button', { type: 'submit' }, 'Add'));
  addForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const src = await api('POST', '/v1/sources', { url: addForm.elements.url.value.trim() });
      toast(`Added ${src.title || src.url}${src.last_error ? ` (error: ${src.last_error})` : ''}`);
      addForm.reset();
      await reload();
    } catch (err) {
      showError(err, addForm);
    }
  });
  const opml = h('input', { id: 'opml-file', type: 'file', accept: '.opml,.xml,text/xml,text/x-opml',
    class: 'visually-hidden' });
  opml.addEventListener('change', guard(async () => {
    const file = opml.files[0];
    if (!file) return;
    opml.value = '';
    const { added } = await api('POST', '/v1/sources/import', await file.text(), { type: 'text/xml' });
    toast(`Imported ${added.length} source${added.length === 1 ? '' : 's'} from ${file.name}`);
    await reload();
  }));
  const refreshAll = h('button', { id: 'refresh-all', type: 'button' }, 'Refresh all');
  refreshAll.addEventListener('click', guard(async () => {
    refreshAll.disabled = true;
    try {
      reportRefresh(await api('POST', '/v1/refresh'));
      await reload();
    } finally {
      refreshAll.disabled = false;
    }
  }));
  root.append(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Sources'), refreshAll,
      h('label', { for: 'opml-file', class: 'button secondary', tabindex: 0,
        onkeydown: (e) => (e.key === 'Enter' || e.key === ' ') && (e.preventDefault(), opml.click()) },
      'Import OPML'), opml),
    addForm, list);
  await reload();
}

function reportRefresh({ sources }) {
  const fresh = sources.reduce((n, s) => n + (s.new_items || 0), 0);
  const failed = sources.filter((s) => s.error);
  toast(`Refreshed ${sources.length} source${sources.length === 1 ? '' : 's'}: ${fresh} new items`);
  for (const s of failed) toast(`Source ${s.id}: ${s.error}`, 'error');
}

async function reloadSources(list) {
  const { sources } = await api('GET', '/v1/sources');
  list.replaceChildren(...sources.map((s) => sourceCard(s, list)));
  if (!sources.length) list.append(h('p', { class: 'empty' }, 'No sources yet. Add a feed URL above.'));
}

function sourceCard(src, list) {
  const name = src.title || src.url;
  const refresh = guard(async (e) => {
    e.currentTarget.disabled = true;
    reportRefresh(await api('POST', `/v1/sources/${encodeURIComponent(src.id)}/refresh`));
    await reloadSources(list);
  });
  const remove = guard(async () => {
    if (!window.confirm(`Remove “${name}” and its items?`)) return;
    await api('DELETE', `/v1/sources/${encodeURIComponent(src.id)}`);
    toast(`Removed ${name}`);
    await reloadSources(list);
  });
  const p = src.posterior || {};
  return h('section', { class: `source panel${src.last_error ? ' has-error' : ''}`, 'data-source': src.id },
    h('h2', {}, name, ' ', h('span', { class: 'kind' }, src.kind)),
    h('p', { class: 'url' }, src.url),
    src.last_error ? h('p', { class: 'source-error', role: 'alert' }, h('strong', {}, 'Last error: '),
      src.last_error) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Items'), h('dd', { class: 'items' }, src.items),
      h('dt', {}, 'Last fetch'), h('dd', {}, timeEl(src.last_fetch_ms)),
      h('dt', {}, 'Every'), h('dd', {}, `${Math.round((src.interval_s || 0) / 60)} min`)),
    h('figure', { class: 'chart' }, posteriorChart(src),
      h('figcaption', {}, `Beta(${num(p.alpha)}, ${num(p.beta)}) · mean ${num(p.mean, 3)}`)),
    h('div', { class: 'actions' },
      h('button', { type: 'button', 'data-action': 'refresh', 'aria-label': `Refresh ${name}`, onclick: refresh },
        'Refresh'),
      h('button', { type: 'button', class: 'danger', 'data-action': 'remove', 'aria-label': `Remove ${name}`,
        onclick: remove }, 'Remove')));
}

// ---- Posterior chart ---------------------------------------------------------------------

// ln Γ(x) by the Lanczos approximation (g = 7, n = 9), with the reflection formula below 0.5.
const LANCZOS = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
  1.5056327351493116e-7];
function lgamma(x) {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
  x -= 1;
  let a = LANCZOS[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

// Beta(a, b) density sampled at cell midpoints (the ends can be infinite when a or b < 1).
function betaDensity(a, b, points) {
  const lnB = lgamma(a) + lgamma(b) - lgamma(a + b);
  const out = [];
  for (let i = 0; i < points; i++) {
    const x = (i + 0.5) / points;
    out.push([x, Math.exp((a - 1) * Math.log(x) + (b - 1) * Math.log1p(-x) - lnB)]);
  }
  return out;
}

function posteriorChart(src) {
  const { alpha, beta, mean } = src.posterior || {};
  const { w, h: ht, pad, points } = CHART;
  const chart = svg('svg', { class: 'posterior', 'data-source': src.id, viewBox: `0 0 ${w} ${ht}`,
    role: 'img', 'aria-label': `Posterior of ${src.title || src.url}: Beta(${num(alpha)}, ${num(beta)})` });
  if (!(alpha > 0 && beta > 0)) {
    chart.append(svg('text', { x: w / 2, y: ht / 2, 'text-anchor': 'middle' }, 'no posterior'));
    return chart;
  }
  const density = betaDensity(alpha, beta, points);
  const yMax = Math.max(...density.map(([, y]) => y).filter(Number.isFinite)) || 1;
  const base = ht - pad;
  const xy = ([x, y]) => `${(x * w).toFixed(1)},${(base - Math.min(y / yMax, 1) * (ht - 2 * pad)).toFixed(1)}`;
  const line = density.map((p, i) => `${i ? 'L' : 'M'}${xy(p)}`).join('');
  const m = Number.isFinite(mean) ? mean : alpha / (alpha + beta);
  chart.append(
    svg('line', { class: 'axis', x1: 0, y1: base, x2: w, y2: base }),
    svg('path', { class: 'area', d: `M0,${base}L${line.slice(1)}L${w},${base}Z` }),
    svg('path', { class: 'density', d: line }),
    svg('line', { class: 'mean', x1: m * w, y1: pad, x2: m * w, y2: base }),
    svg('text', { class: 'mean-label', x: m * w + (m > 0.8 ? -3 : 3), y: pad + 8,
      'text-anchor': m > 0.8 ? 'end' : 'start' }, `mean ${num(m, 2)}`),
    svg('title', {}, `Beta(${num(alpha)}, ${num(beta)}), mean ${num(m, 3)}`));
  return chart;
}

// ---- Saved and history --------------------------------------------------------------------

const LIST_LIMIT = 100;

async function renderSaved(root) {
  const list = h('div', { id: 'saved-list', class: 'cards' });
  root.append(h('h1', {}, 'Saved'),
    h('p', { class: 'hint' }, 'Items you saved for later. The feed never shows an item twice; keep one here.'),
    list);
  const { items } = await api('GET', `/v1/saved?${new URLSearchParams({ limit: LIST_LIMIT })}`);
  list.append(...items.map((it) => {
    const card = itemCard(it, null);
    const unsave = guard(async () => {
      await api('DELETE', `/v1/saved/${encodeURIComponent(it.id)}`);
      toast(`Removed “${it.title}” from Saved`);
      card.remove();
    });
    $('.actions', card).append(h('button', { type: 'button', class: 'secondary', 'data-action': 'unsave',
      'aria-label': `Unsave ${it.title}`, onclick: unsave }, 'Unsave'));
    return card;
  }));
  if (!items.length) list.append(h('p', { class: 'empty' }, 'Nothing saved yet. Use Save on a feed card.'));
  select(0, { focus: false });
}

const MARKS = [['liked', 'liked'], ['opened', 'opened'], ['skipped', 'skipped'], ['disliked', 'disliked'],
  ['saved', 'saved']];

async function renderHistory(root) {
  const page = await api('GET', `/v1/history?${new URLSearchParams({ limit: LIST_LIMIT })}`);
  const list = h('div', { id: 'history-list', class: 'cards' });
  root.append(h('h1', {}, 'History'),
    h('p', { class: 'hint' }, `${page.shown} items shown to you so far, newest first.`), list);
  list.append(...page.entries.map((e) => {
    const card = itemCard(e, null);
    const marks = MARKS.filter(([k]) => e[k]).map(([, text]) => h('span', { class: `mark mark-${text}` }, text));
    $('.meta', card).append(' · ', e.shown ? 'shown ' : 'seen in search ', timeEl(e.first_ms), ' ', ...marks);
    return card;
  }));
  if (!page.entries.length) list.append(h('p', { class: 'empty' }, 'Nothing shown yet.'));
  select(0, { focus: false });
}

views.labels = renderLabels;
views.sources = renderSources;
views.saved = renderSaved;
views.history = renderHistory;
