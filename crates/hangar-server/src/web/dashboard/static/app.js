// Hangar dashboard: small, dependency-free progressive enhancement.
// Pages are rendered by the server; this script keeps them live (runs list
// polling, session transcript over SSE) and sends actions to the JSON API
// with the session cookie and the page's CSRF token.
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED']);
  const STATE_LABEL = {
    QUEUED: 'Queued', PENDING: 'Pending', CLAIMED: 'Claimed', INPROGRESS: 'Running',
    SUCCEEDED: 'Succeeded', FAILED: 'Failed', ERROR: 'Error', BLOCKED: 'Blocked',
    CANCELLED: 'Cancelled',
  };
  const MAX_OUTPUT = 20000;

  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : '';
  }

  // Calls the JSON API; throws an Error whose message is the problem detail.
  async function api(method, url, body, extraHeaders) {
    const headers = Object.assign({ Accept: 'application/json' }, extraHeaders || {});
    if (method !== 'GET') headers['X-Hangar-CSRF'] = csrf();
    const opts = { method, headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(url, opts);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const msg = (data && (data.detail || data.title)) || `Request failed (HTTP ${resp.status})`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function say(el, text, kind) {
    if (!el) return;
    el.textContent = text;
    el.dataset.kind = kind || '';
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // Only http(s) links from event data become clickable.
  function safeUrl(u) {
    try {
      const parsed = new URL(u, location.href);
      return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function localTimes(root) {
    $$('time[datetime]', root || document).forEach((t) => {
      const d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) {
        t.title = t.getAttribute('datetime');
        t.textContent = d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
      }
    });
  }

  function stateBadge(state) {
    const s = el('span', `badge state-${String(state).toLowerCase()}`, STATE_LABEL[state] || state);
    s.dataset.state = state;
    return s;
  }

  // ---- Runs list -------------------------------------------------------

  function initRunsList() {
    const form = $('#run-filters');
    const tbody = $('#run-rows');
    if (!form || !tbody) return;
    const live = $('#runs-live');
    let timer = null;
    let inflight = false;
    let lastHtml = null;
    const query = () => new URLSearchParams(
      Array.from(new FormData(form)).filter(([, v]) => String(v).trim() !== ''),
    ).toString();

    async function refresh() {
      if (inflight || document.hidden) return;
      inflight = true;
      const q = query();
      try {
        const resp = await fetch(tbody.dataset.src + (q ? `?${q}` : ''), { credentials: 'same-origin' });
        if (resp.redirected) { location.href = resp.url; return; }
        if (resp.ok) {
          const html = await resp.text();
          if (html !== lastHtml) {
            tbody.innerHTML = html;
            lastHtml = html;
            localTimes(tbody);
          }
          say(live, `Live · updated ${new Date().toLocaleTimeString()}`);
        } else {
          say(live, `Could not refresh (HTTP ${resp.status}); retrying…`, 'error');
        }
      } catch (_) {
        say(live, 'Offline; retrying…', 'error');
      } finally {
        inflight = false;
      }
      const target = q ? `/?${q}` : '/';
      if (location.pathname + location.search !== target) history.replaceState(null, '', target);
    }
    const soon = () => { clearTimeout(timer); timer = setTimeout(refresh, 250); };
    form.addEventListener('input', soon);
    form.addEventListener('change', soon);
    form.addEventListener('submit', (e) => { e.preventDefault(); refresh(); });
    setInterval(refresh, 2000);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  }

  function initNewRun() {
    const form = $('#new-run');
    if (!form) return;
    const status = $('#new-run-status');
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const prompt = $('#new-prompt').value.trim();
      if (!prompt) { say(status, 'Write a prompt first.', 'error'); return; }
      const body = { prompt };
      const config = {};
      const model = $('#new-model').value;
      const host = $('#new-host').value.trim();
      if (model) config.model_id = model;
      if (host) config.worker_host = host;
      if (Object.keys(config).length) body.config = config;
      say(status, 'Starting…');
      try {
        const run = await api('POST', '/api/v1/agent/runs', body, { 'X-Hangar-Source': 'WEB_APP' });
        location.href = `/runs/${encodeURIComponent(run.run_id)}`;
      } catch (err) {
        say(status, err.message, 'error');
      }
    });
  }

  // ---- Transcript (run page and public viewer) -------------------------

  function initTranscript() {
    const list = $('#transcript');
    const root = $('#run');
    if (!list || !root) return;
    const streamState = $('#stream-state');
    const working = $('#working');
    const notice = $('#notice');
    const artifacts = $('#artifacts');
    const seen = new Set();
    const tools = new Map();
    const baseUrl = list.dataset.events;
    let lastExec = null;
    let lastId = null;
    let es = null;
    let closed = false;

    function setState(state) {
      if (!state) return;
      root.dataset.state = state;
      const done = TERMINAL.has(state);
      if (working) working.hidden = done;
      const cancel = $('#cancel-box');
      if (cancel) cancel.hidden = done;
      const pub = $('#public-state');
      if (pub) { pub.replaceChildren(stateBadge(state)); }
      refreshMeta();
    }

    function showNotice(text) {
      if (!notice) return;
      notice.textContent = text;
      notice.hidden = false;
    }

    function append(node) {
      const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
      list.appendChild(node);
      if (nearBottom && list.childElementCount > 1) node.scrollIntoView({ block: 'nearest' });
    }

    function item(kind, who) {
      const li = el('li', `ev ev-${kind}`);
      if (who) li.appendChild(el('div', 'who', who));
      return li;
    }

    function toolEntry(callId, name, args) {
      const li = item('tool');
      const d = el('details');
      const s = el('summary');
      s.appendChild(el('span', 'tname', name || 'tool'));
      const st = el('span', 'tstatus run', 'running');
      s.appendChild(st);
      d.appendChild(s);
      if (args !== undefined) {
        d.appendChild(el('div', 'label', 'Arguments'));
        d.appendChild(el('pre', 'args', typeof args === 'string' ? args : JSON.stringify(args, null, 2)));
      }
      const outLabel = el('div', 'label', 'Output');
      const out = el('pre', 'output');
      outLabel.hidden = true;
      out.hidden = true;
      d.appendChild(outLabel);
      d.appendChild(out);
      li.appendChild(d);
      const t = { li, st, out, outLabel };
      tools.set(callId, t);
      append(li);
      return t;
    }

    function addArtifact(ev) {
      if (!artifacts) return;
      const none = $('.none', artifacts);
      if (none) none.remove();
      const li = el('li');
      const label = ev.title || ev.url || ev.path || ev.artifact_type;
      const href = ev.url ? safeUrl(ev.url) : null;
      if (href) {
        const a = el('a', null, label);
        a.href = href;
        a.rel = 'noopener noreferrer';
        a.target = '_blank';
        li.appendChild(a);
      } else {
        li.appendChild(el('span', null, label));
      }
      li.appendChild(document.createTextNode(' '));
      li.appendChild(el('span', 'tag', String(ev.artifact_type || 'artifact').replace('_', ' ')));
      if (ev.path && ev.path !== label) li.appendChild(el('div', 'muted small', ev.path));
      artifacts.appendChild(li);
    }

    function render(ev) {
      const key = `${ev.execution_id}:${ev.seq}`;
      if (seen.has(key)) return;
      seen.add(key);
      if (lastExec !== null && ev.execution_id !== lastExec) {
        append(el('li', 'ev ev-sep', 'New execution'));
      }
      lastExec = ev.execution_id;
      switch (ev.kind) {
        case 'user_message': {
          const li = item('user', 'Prompt');
          li.appendChild(el('div', 'text', ev.text));
          append(li);
          break;
        }
        case 'assistant_message': {
          const li = item('assistant', 'Agent');
          li.appendChild(el('div', 'text', ev.text));
          append(li);
          break;
        }
        case 'reasoning': {
          const li = item('reasoning');
          const d = el('details');
          d.appendChild(el('summary', null, 'Thinking'));
          d.appendChild(el('div', 'text', ev.text));
          li.appendChild(d);
          append(li);
          break;
        }
        case 'tool_call':
          toolEntry(ev.call_id, ev.name, ev.arguments);
          break;
        case 'tool_result': {
          const t = tools.get(ev.call_id) || toolEntry(ev.call_id, ev.name);
          t.st.textContent = ev.is_error ? 'failed' : 'done';
          t.st.className = `tstatus ${ev.is_error ? 'err' : 'ok'}`;
          let out = String(ev.output || '');
          if (out.length > MAX_OUTPUT) out = `${out.slice(0, MAX_OUTPUT)}\n… (${out.length - MAX_OUTPUT} more characters)`;
          t.out.textContent = out;
          t.out.hidden = false;
          t.outLabel.hidden = false;
          break;
        }
        case 'status': {
          const li = item('status');
          li.textContent = ev.message || (ev.state ? STATE_LABEL[ev.state] || ev.state : 'status');
          append(li);
          break;
        }
        case 'artifact':
          addArtifact(ev);
          break;
        case 'usage':
          refreshMeta();
          break;
        case 'error': {
          const li = item('error', 'Error');
          li.appendChild(el('div', 'text', ev.message));
          append(li);
          break;
        }
        default:
          break;
      }
    }

    function parse(m) {
      try { return JSON.parse(m.data); } catch (_) { return null; }
    }

    function connect(after) {
      if (!baseUrl) return;
      const url = after ? `${baseUrl}${baseUrl.includes('?') ? '&' : '?'}after=${encodeURIComponent(after)}` : baseUrl;
      closed = false;
      es = new EventSource(url);
      root.dataset.stream = 'connecting';
      es.addEventListener('open', () => { say(streamState, 'Live'); root.dataset.stream = 'open'; });
      es.addEventListener('session', (m) => {
        if (m.lastEventId) lastId = m.lastEventId;
        const ev = parse(m);
        if (ev) render(ev);
      });
      es.addEventListener('run_state', (m) => {
        const d = parse(m);
        if (d) setState(d.state);
      });
      es.addEventListener('end', (m) => {
        const d = parse(m) || {};
        es.close();
        closed = true;
        root.dataset.stream = 'ended';
        setState(d.state);
        say(streamState, `Ended · ${STATE_LABEL[d.state] || d.state || ''}`);
      });
      es.addEventListener('revoked', (m) => {
        const d = parse(m) || {};
        es.close();
        closed = true;
        root.dataset.stream = 'revoked';
        if (working) working.hidden = true;
        say(streamState, 'Closed');
        showNotice(d.detail || 'Your access to this session was revoked.');
        const f = $('#followup');
        if (f) f.hidden = true;
      });
      es.onerror = () => {
        if (closed) return;
        if (es.readyState === EventSource.CLOSED) {
          closed = true;
          root.dataset.stream = 'closed';
          say(streamState, 'Disconnected');
          showNotice('The live stream closed (you may no longer have access). Reload the page to try again.');
        } else {
          say(streamState, 'Reconnecting…');
        }
      };
    }

    let metaTimer = null;
    function refreshMeta() {
      const box = $('#run-meta');
      if (!box || !box.dataset.src) return;
      clearTimeout(metaTimer);
      metaTimer = setTimeout(async () => {
        try {
          const resp = await fetch(box.dataset.src, { credentials: 'same-origin' });
          if (resp.ok && !resp.redirected) {
            box.innerHTML = await resp.text();
            localTimes(box);
          }
        } catch (_) { /* next event retries */ }
      }, 400);
    }

    if (working) working.hidden = TERMINAL.has(root.dataset.state);
    // Public viewer: load the run's metadata first.
    if (root.dataset.public) {
      api('GET', root.dataset.public).then((s) => {
        say($('#public-title'), s.title || 'Shared session');
        document.title = `${s.title || 'Shared session'} · Hangar`;
        setState(s.state);
        const created = new Date(s.created_at);
        say($('#public-meta'), `Run ${s.run_id} · created ${isNaN(created) ? s.created_at : created.toLocaleString()}`);
        connect(null);
      }).catch((err) => {
        say(streamState, 'Unavailable');
        showNotice(err.status === 404 ? 'This link does not exist or was revoked.' : err.message);
      });
    } else {
      connect(null);
    }

    // Follow-ups (editors only: the server renders the form only for them).
    const form = $('#followup');
    if (form) {
      const status = $('#followup-status');
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const box = $('#followup-text');
        const message = box.value.trim();
        if (!message) { say(status, 'Write a message first.', 'error'); return; }
        say(status, 'Sending…');
        try {
          await api('POST', `/api/v1/agent/runs/${encodeURIComponent(root.dataset.runId)}/followups`, { message });
          box.value = '';
          say(status, 'Sent.', 'ok');
          if (working) working.hidden = false;
          // An ended run continues in a new execution: listen again.
          if (closed) connect(lastId);
        } catch (err) {
          say(status, err.message, 'error');
        }
      });
    }

    const cancel = $('#cancel-run');
    if (cancel) {
      cancel.addEventListener('click', async () => {
        const status = $('#action-status');
        cancel.disabled = true;
        say(status, 'Cancelling…');
        try {
          await api('POST', `/api/v1/agent/runs/${encodeURIComponent(root.dataset.runId)}/cancel`);
          say(status, 'Cancel requested.', 'ok');
          const box = $('#cancel-box');
          if (box) box.open = false;
        } catch (err) {
          say(status, err.message, 'error');
        } finally {
          cancel.disabled = false;
        }
      });
    }
  }

  // ---- Share dialog ----------------------------------------------------

  function initShare() {
    const open = $('#share-open');
    const dialog = $('#share-dialog');
    const root = $('#run');
    if (!open || !dialog || !root) return;
    const base = `/api/v1/agent/runs/${encodeURIComponent(root.dataset.runId)}/shares`;
    const status = $('#share-status');
    const listEl = $('#share-list');
    const emailRow = $('#share-email-row');
    const role = $('#share-role');
    const who = () => ($('input[name="who"]:checked', dialog) || {}).value || 'team';

    function syncForm() {
      const w = who();
      emailRow.hidden = w !== 'user';
      const edit = $('option[value="edit"]', role);
      edit.disabled = w === 'public';
      if (w === 'public') role.value = 'view';
    }

    async function load() {
      try {
        const data = await api('GET', base);
        listEl.replaceChildren();
        const shares = (data && data.shares) || [];
        if (!shares.length) listEl.appendChild(el('li', 'muted', 'Only you and team admins.'));
        shares.forEach((s) => {
          const li = el('li');
          const label = s.grantee === 'team' ? 'Everyone in the team'
            : s.grantee === 'public' ? 'Public link' : s.grantee.replace(/^user:/, '');
          li.appendChild(el('span', 'grantee', label));
          li.appendChild(document.createTextNode(' '));
          li.appendChild(el('span', 'tag', s.role));
          const b = el('button', 'small danger', 'Revoke');
          b.type = 'button';
          b.setAttribute('aria-label', `Revoke ${s.role} access for ${label}`);
          b.addEventListener('click', async () => {
            b.disabled = true;
            try {
              await api('DELETE', `${base}/${encodeURIComponent(s.id)}`);
              say(status, `Revoked access for ${label}.`, 'ok');
              load();
            } catch (err) {
              b.disabled = false;
              say(status, err.message, 'error');
            }
          });
          li.appendChild(b);
          listEl.appendChild(li);
        });
      } catch (err) {
        listEl.replaceChildren(el('li', 'error', err.message));
      }
    }

    open.addEventListener('click', () => {
      syncForm();
      $('#share-link').hidden = true;
      say(status, '');
      if (typeof dialog.showModal === 'function') dialog.showModal(); else dialog.setAttribute('open', '');
      load();
    });
    $('#share-close').addEventListener('click', () => dialog.close());
    $$('input[name="who"]', dialog).forEach((r) => r.addEventListener('change', syncForm));
    $('#share-add').addEventListener('click', async () => {
      const w = who();
      let grantee = w;
      if (w === 'user') {
        const email = $('#share-email').value.trim();
        if (!email) { say(status, 'Enter their email.', 'error'); $('#share-email').focus(); return; }
        grantee = `user:${email}`;
      }
      say(status, 'Sharing…');
      try {
        const s = await api('POST', base, { grantee, role: role.value });
        if (s && s.url) {
          $('#share-link').hidden = false;
          const input = $('#share-link-url');
          input.value = s.url;
          input.focus();
          input.select();
        }
        say(status, 'Shared.', 'ok');
        load();
      } catch (err) {
        say(status, err.message, 'error');
      }
    });
  }

  // ---- Schedules, API keys ---------------------------------------------

  function initSchedules() {
    $$('button[data-schedule]').forEach((b) => {
      b.addEventListener('click', async () => {
        b.disabled = true;
        try {
          await api('POST', `/api/v1/agent/schedules/${encodeURIComponent(b.dataset.schedule)}/${b.dataset.action}`);
          location.reload();
        } catch (err) {
          b.disabled = false;
          say($('#schedule-status'), err.message, 'error');
        }
      });
    });
  }

  function initApiKeys() {
    const form = $('#new-key');
    const status = $('#key-status');
    if (form) {
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const body = { name: $('#key-name').value.trim() };
        const days = parseInt($('#key-days').value, 10);
        if (days > 0) body.expires_at = new Date(Date.now() + days * 86400000).toISOString();
        try {
          const k = await api('POST', '/api/v1/api-keys', body);
          const box = $('#new-key-secret');
          box.hidden = false;
          const input = $('#new-key-value');
          input.value = k.key;
          input.focus();
          input.select();
          say(status, `Key “${k.name}” created. It appears in the list after a reload.`, 'ok');
          form.reset();
        } catch (err) {
          say(status, err.message, 'error');
        }
      });
      const copy = $('#copy-key');
      copy.addEventListener('click', async () => {
        const input = $('#new-key-value');
        try {
          await navigator.clipboard.writeText(input.value);
          say(status, 'Copied.', 'ok');
        } catch (_) {
          input.select();
          say(status, 'Press Ctrl+C (or ⌘C) to copy the selected key.');
        }
      });
    }
    $$('button[data-expire-key]').forEach((b) => {
      b.addEventListener('click', async () => {
        b.disabled = true;
        try {
          await api('POST', `/api/v1/api-keys/${encodeURIComponent(b.dataset.expireKey)}/expire`);
          location.reload();
        } catch (err) {
          b.disabled = false;
          say(status, err.message, 'error');
        }
      });
    });
  }

  // ---- Integrations and outbound webhooks ------------------------------

  // The settings field that says who may trigger, and the one naming the
  // team secret with the provider's API token, per kind.
  const INT_FILTER = { slack: 'channels', linear: 'linear_teams', github: 'repos' };
  const INT_TOKEN = { slack: 'bot_token_secret', linear: 'api_key_secret', github: 'token_secret' };
  const FLASH = 'hangar-flash';

  function setOrDelete(obj, key, value) {
    if (value === undefined || value === null || value === '' || (Array.isArray(value) && !value.length)) {
      delete obj[key];
    } else {
      obj[key] = value;
    }
  }

  function initIntegrations() {
    const status = $('#integration-status');
    if (!status) return;
    try {
      const flash = sessionStorage.getItem(FLASH);
      if (flash) { sessionStorage.removeItem(FLASH); say(status, flash, 'ok'); }
    } catch (_) { /* storage disabled: no message */ }

    $$('button[data-copy]').forEach((b) => {
      b.addEventListener('click', async () => {
        const input = document.getElementById(b.dataset.copy);
        if (!input) return;
        try {
          await navigator.clipboard.writeText(input.value);
          say(status, 'Copied the webhook URL.', 'ok');
        } catch (_) {
          input.focus();
          input.select();
          say(status, 'Press Ctrl+C (or ⌘C) to copy the selected URL.');
        }
      });
    });

    $$('button[data-integration-test]').forEach((b) => {
      b.addEventListener('click', async () => {
        const id = b.dataset.integrationTest;
        const out = $$('[data-test-result]').find((e) => e.dataset.testResult === id);
        b.disabled = true;
        say(out, 'Testing…');
        try {
          const r = await api('POST', `/api/v1/integrations/${encodeURIComponent(id)}/test`);
          const ok = !!(r && r.ok === true);
          const detail = (r && typeof r.detail === 'string' && r.detail) || (ok ? 'It works.' : 'The test failed.');
          say(out, `${ok ? '✓' : '✗'} ${detail}`, ok ? 'ok' : 'error');
        } catch (err) {
          say(out, err.message, 'error');
        } finally {
          b.disabled = false;
        }
      });
    });

    $$('button[data-integration-delete]').forEach((b) => {
      b.addEventListener('click', async () => {
        if (!window.confirm(`Delete the integration “${b.dataset.name}”? Its webhook URL stops working.`)) return;
        b.disabled = true;
        try {
          await api('DELETE', `/api/v1/integrations/${encodeURIComponent(b.dataset.integrationDelete)}`);
          try { sessionStorage.setItem(FLASH, `Deleted “${b.dataset.name}”.`); } catch (_) { /* no message */ }
          location.reload();
        } catch (err) {
          b.disabled = false;
          say(status, err.message, 'error');
        }
      });
    });

    const form = $('#integration-form');
    if (!form) return;
    const editor = $('#integration-editor');
    const kind = $('#int-kind');
    const save = $('#int-save');
    const cancel = $('#int-cancel');
    // The settings being edited: the fields the form does not show are kept.
    let base = {};

    function sync() {
      const k = kind.value;
      $('#int-template-row').hidden = k !== 'webhook';
      $('#int-allowed').disabled = !INT_FILTER[k];
      $('#int-token').disabled = !INT_TOKEN[k];
    }

    function reset() {
      form.reset();
      $('#int-id').value = '';
      base = {};
      kind.disabled = false;
      say($('#integration-form-title'), 'New integration');
      save.textContent = 'Create integration';
      cancel.hidden = true;
      sync();
    }

    kind.addEventListener('change', sync);
    cancel.addEventListener('click', reset);
    sync();

    $$('button[data-integration-edit]').forEach((b) => {
      b.addEventListener('click', () => {
        let settings = {};
        try { settings = JSON.parse(b.dataset.settings || '{}') || {}; } catch (_) { settings = {}; }
        base = settings;
        const k = b.dataset.kind;
        const ac = settings.agent_config || {};
        $('#int-id').value = b.dataset.integrationEdit;
        kind.value = k;
        kind.disabled = true;
        $('#int-name').value = b.dataset.name;
        $('#int-secret').value = '';
        $('#int-allowed').value = (settings[INT_FILTER[k]] || []).join(', ');
        $('#int-token').value = settings[INT_TOKEN[k]] || '';
        $('#int-model').value = ac.model_id || '';
        $('#int-host').value = ac.worker_host || '';
        $('#int-env').value = ac.environment_id || '';
        $('#int-prefix').value = settings.prompt_prefix || '';
        $('#int-template').value = settings.prompt_template || '';
        say($('#integration-form-title'), `Edit ${b.dataset.name}`);
        save.textContent = 'Save changes';
        cancel.hidden = false;
        sync();
        editor.open = true;
        editor.scrollIntoView({ block: 'start' });
        $('#int-name').focus();
      });
    });

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const id = $('#int-id').value;
      const k = kind.value;
      const name = $('#int-name').value.trim();
      const secret = $('#int-secret').value;
      if (!id && !secret) {
        say(status, 'Enter the webhook signing secret.', 'error');
        $('#int-secret').focus();
        return;
      }
      const settings = JSON.parse(JSON.stringify(base));
      const allowed = $('#int-allowed').value.split(/[\s,]+/).filter((v) => v);
      if (INT_FILTER[k]) setOrDelete(settings, INT_FILTER[k], allowed);
      if (INT_TOKEN[k]) setOrDelete(settings, INT_TOKEN[k], $('#int-token').value.trim());
      const ac = Object.assign({}, settings.agent_config || {});
      setOrDelete(ac, 'model_id', $('#int-model').value.trim());
      setOrDelete(ac, 'worker_host', $('#int-host').value.trim());
      setOrDelete(ac, 'environment_id', $('#int-env').value.trim());
      setOrDelete(settings, 'agent_config', Object.keys(ac).length ? ac : null);
      setOrDelete(settings, 'prompt_prefix', $('#int-prefix').value.trim());
      if (k === 'webhook') setOrDelete(settings, 'prompt_template', $('#int-template').value.trim());
      const body = { name, settings };
      if (secret) body.secret = secret;
      save.disabled = true;
      say(status, 'Saving…');
      try {
        const r = id
          ? await api('PUT', `/api/v1/integrations/${encodeURIComponent(id)}`, body)
          : await api('POST', '/api/v1/integrations', Object.assign({ kind: k }, body));
        $('#int-secret').value = '';
        const what = id ? 'Saved' : 'Created';
        try {
          sessionStorage.setItem(FLASH, `${what} “${r.name}”. Its webhook URL: ${r.webhook_url}`);
        } catch (_) { /* no message */ }
        location.reload();
      } catch (err) {
        say(status, err.message, 'error');
      } finally {
        save.disabled = false;
      }
    });
  }

  function initWebhooks() {
    const status = $('#webhook-status');
    if (!status) return;
    const logOf = (id) => $$('tbody[data-deliveries]').find((t) => t.dataset.deliveries === id);

    async function refresh(id) {
      const tbody = logOf(id);
      if (!tbody) return;
      const resp = await fetch(tbody.dataset.src, { credentials: 'same-origin' });
      if (resp.ok && !resp.redirected) {
        tbody.innerHTML = await resp.text();
        localTimes(tbody);
        bindRedeliver(tbody);
      }
    }

    // Refreshes a log while it has pending deliveries (at most a minute).
    const watching = new Set();
    function watch(id) {
      if (watching.has(id)) return;
      watching.add(id);
      let left = 60;
      const tick = async () => {
        try { await refresh(id); } catch (_) { /* next tick retries */ }
        const tbody = logOf(id);
        if (tbody && $('tr[data-state="pending"]', tbody) && --left > 0) setTimeout(tick, 1000);
        else watching.delete(id);
      };
      setTimeout(tick, 300);
    }

    function bindRedeliver(root) {
      $$('button[data-redeliver]', root).forEach((b) => {
        b.addEventListener('click', async () => {
          b.disabled = true;
          try {
            await api('POST', `/api/v1/webhooks/${encodeURIComponent(b.dataset.webhook)}/deliveries/${encodeURIComponent(b.dataset.redeliver)}/redeliver`);
            say(status, 'Queued again; the log updates when it is sent.', 'ok');
            watch(b.dataset.webhook);
          } catch (err) {
            b.disabled = false;
            say(status, err.message, 'error');
          }
        });
      });
    }

    bindRedeliver(document);
    $$('button[data-webhook-test]').forEach((b) => {
      b.addEventListener('click', async () => {
        b.disabled = true;
        try {
          await api('POST', `/api/v1/webhooks/${encodeURIComponent(b.dataset.webhookTest)}/test`);
          say(status, 'Test delivery (ping) queued; the log updates when it is sent.', 'ok');
          watch(b.dataset.webhookTest);
        } catch (err) {
          say(status, err.message, 'error');
        } finally {
          b.disabled = false;
        }
      });
    });
    $$('tbody[data-deliveries]').forEach((t) => {
      if ($('tr[data-state="pending"]', t)) watch(t.dataset.deliveries);
    });
  }

  function init() {
    localTimes();
    initRunsList();
    initNewRun();
    initTranscript();
    initShare();
    initSchedules();
    initApiKeys();
    initIntegrations();
    initWebhooks();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
