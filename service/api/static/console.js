/* imgsim ops console: plain JavaScript, no framework, no build step, nothing loaded from another origin.
 *
 * The token is asked once, kept in sessionStorage (this tab only, gone when it closes), and sent as the
 * `token` header; it never goes into a URL. Any 401 clears it and brings back the prompt. API messages are
 * shown as the API wrote them. Thumbnails are fetched with the token header and shown through blob: URLs,
 * because an <img src> cannot send headers. The token's namespace and rights come from GET whoami: controls
 * it may not use are disabled, with a note saying why, instead of failing after a confirmation. A deleted
 * record leaves every view at once (search results, the key's cards, the duplicate groups, the counts, the
 * thumbnail cache).
 */
var API = '/api/image/sim/';
var TOKEN_KEY = 'imgsim.token';
var NS_KEY = 'imgsim.namespace';
var LANG_KEY = 'imgsim.lang';
var THUMB_CACHE_MAX = 400;
var THUMB_PARALLEL = 4;
var DUPS_PAGE = 20; // groups per page of POST duplicates
var DUPS_POLL_MS = 700; // how often a running scan's progress is asked
var DEL_CHUNK = 100; // ids per del/id call (MAX_BATCH_KEYS is at least this on any sane setting)

var state = { token: null, view: 'search', query: null, queryUrl: null, browseKey: null, browseRecords: [],
  grant: null, search: null, searchSeq: 0, region: null, shown: null, dups: null };

// ---------------------------------------------------------------- i18n (English labels, optional 中文)
var ZH = {
  'Skip to content': '跳到内容', 'Ops console': '运维控制台', 'console': '控制台', 'Token': '令牌',
  'login.help': '请输入服务令牌。令牌只保存在此浏览器标签页中，并以请求头发送。',
  'login.open': '如果服务未设置令牌，请留空。', 'Open console': '进入控制台',
  'Search': '搜索', 'Browse a key': '按 key 浏览', 'Catalog': '概览', 'records': '条记录',
  'Namespace': '命名空间', 'ns.placeholder': '令牌自带', 'API docs': 'API 文档', 'Log out': '退出',
  'Search by': '搜索方式', 'Image': '图片', 'Path': '路径', 'Stored id': '已存 id',
  'drop.help': '把图片拖到这里、点击选择文件，或直接粘贴（Ctrl+V）。', 'Image URL': '图片 URL',
  'Path on the server': '服务器上的路径', 'Stored record id': '已存记录 id', 'Options': '选项',
  'Results': '结果数', 'Minimum score': '最低分数', 'Filter': '过滤条件', 'One hit per product': '每个商品只取一条',
  'search.empty': '结果会显示在这里：拖入、选择或粘贴图片，或按 URL、路径、id 搜索。',
  'Key': 'Key', 'Show images': '显示图片', 'Delete whole key': '删除整个 key', 'Refresh': '刷新',
  'Records stored': '已存记录', 'Service': '服务', 'Model': '模型', 'Batching': '批处理',
  'Delete': '删除', 'Find similar': '找相似', 'No preview': '无预览', 'score': '分数',
  'Searching…': '搜索中…', 'Loading…': '加载中…', 'Ready': '就绪', 'Not ready': '未就绪',
  'n.results': '{n} 条结果，用时 {ms} ms', 'n.results.one': '1 条结果，用时 {ms} ms', 'No similar images found.': '没有找到相似图片。',
  'key.head': 'Key “{key}”：{n} 张图片', 'key.none': 'Key “{key}” 下没有图片。',
  'confirm.id': '删除 1 条记录（id {id}，key “{key}”）？此操作无法撤销。',
  'confirm.key': '删除 key “{key}” 下的全部 {n} 条记录？此操作无法撤销。',
  'confirm.key.one': '删除 key “{key}” 下仅有的 1 条记录（id {id}）？此操作无法撤销。',
  'key.head.one': 'Key “{key}”：1 张图片', 'deleted.one': '已删除 1 条记录。',
  'deleted': '已删除 {n} 条记录。', 'Choose an image first.': '请先选择一张图片。',
  'Enter a value first.': '请先填写内容。', 'filter.bad': '过滤条件必须是 JSON 对象，例如 {"category": "shoes"}：',
  'id.bad': 'id 必须是正整数。', 'not.image': '这不是图片文件。', 'unreachable': '无法连接服务',
  'token.refused': '令牌被拒绝：', 'Enter a key first.': '请先输入 key。', 'in namespace': '命名空间',
  'batches': '批次', 'requests': '请求', 'mean batch': '平均批大小', 'busy s': '忙碌秒数',
  'no.write': '此令牌没有写权限，不能删除记录。', 'ns.bound': '此令牌绑定在命名空间“{ns}”，不能选择其他命名空间。',
  'ns.default': '默认', 'removed': '（之后已删除 {n} 条）',
  'Box searched': '搜索的区域', 'Auto': '自动', 'Whole image': '整张图片',
  'region.help': '拖动方框或它的四个角，或在图片上另画一个方框：松开后重新搜索。键盘：方向键移动方框，Shift+方向键调整大小，Enter 搜索。',
  'region.label': 'region（按 EXIF 方向摆正后的图片像素）：', 'region.size': '图片 {w} × {h} 像素',
  'region.box': '搜索的区域，x={x} y={y} w={w} h={h}', 'region.whole': '整张图片',
  'region.auto.title': '让 imgsim 找出图中的主体并只搜索它（region=auto）',
  'region.whole.title': '搜索整张图片（region=whole）',
  'Duplicates': '重复', 'Scan for duplicates': '扫描重复', 'More groups': '更多重复组', 'Choose': '选中',
  'Keep this one': '保留这张', 'dups.threshold': '默认：当前的重复阈值', 'capped': '已截断',
  'dups.help': '两条记录的图片 MD5 相同，或相似分数不低于最低分数时，视为重复。扫描会读取整个命名空间，期间搜索照常响应。',
  'no.write.dups': '此令牌没有写权限，不能开始扫描，也不能删除记录。',
  'dups.none': '这个命名空间还没有完成的扫描：点击“扫描重复”找出重复组。',
  'dups.none.read': '这个命名空间还没有完成的扫描；有写权限的令牌才能开始扫描。',
  'dups.clean': '没有剩下的重复组。', 'dups.found.none': '这次扫描没有找到重复。',
  'dups.summary': '{when} 的扫描：{groups} 个重复组，共 {records} 条记录，扫描了 {total} 条（最低分数 {score}）',
  'dups.queued': '扫描排队中，等待开始…', 'dups.running': '扫描中：已读 {done} / {total} 条记录',
  'dups.starting': '正在开始扫描…', 'dups.done': '扫描完成，用时 {s} 秒：{groups} 个重复组。',
  'dups.done.one': '扫描完成，用时 {s} 秒：1 个重复组。',
  'dups.summary.one': '{when} 的扫描：1 个重复组，共 {records} 条记录，扫描了 {total} 条（最低分数 {score}）',
  'dups.failed': '扫描失败：', 'dups.group': '{n} 条记录', 'dups.capped': '共 {size} 条，只列出 {shown} 条',
  'dups.delete.chosen': '删除选中的 {n} 条', 'dups.choose.first': '请先选中要删除的记录。',
  'confirm.dups': '删除 {n} 条记录？此操作无法撤销。',
  'confirm.dups.one': '删除 1 条记录？此操作无法撤销。',
  'confirm.dups.keep': '删除 {n} 条记录？保留 id {id}（key “{key}”），删除同组的其他记录。此操作无法撤销。',
  'confirm.dups.keep.one': '删除 1 条记录？保留 id {id}（key “{key}”），删除同组的另一条记录。此操作无法撤销。',
  'keep.label': '保留 id {id}，删除同组其他记录', 'choose.label': '选中 id {id}'
};
var EN = {
  'n.results': '{n} results in {ms} ms', 'n.results.one': '1 result in {ms} ms', 'key.head': 'Key “{key}”: {n} images',
  'key.none': 'No images are stored under key “{key}”.',
  'confirm.id': 'Delete 1 record (id {id}, key “{key}”)? This cannot be undone.',
  'confirm.key': 'Delete all {n} records stored under key “{key}”? This cannot be undone.',
  'deleted': 'Deleted {n} records.', 'deleted.one': 'Deleted 1 record.', 'key.head.one': 'Key “{key}”: 1 image',
  'confirm.key.one': 'Delete the only record (id {id}) stored under key “{key}”? This cannot be undone.',
  'filter.bad': 'The filter must be a JSON object like {"category": "shoes"}: ',
  'id.bad': 'The id must be a positive whole number.', 'not.image': 'That is not an image file.',
  'unreachable': 'Cannot reach the service', 'token.refused': 'The token was refused: ',
  'login.help': 'Enter the service token. It is kept in this browser tab only and sent as a header.',
  'login.open': 'Leave it empty if the service has no token.', 'ns.placeholder': "token's own",
  'drop.help': 'Drop an image here, click to choose a file, or paste one (Ctrl+V).',
  'search.empty': 'Results appear here: drop, choose or paste an image, or search by URL, path or id.',
  'no.write': 'This token has no write right, so it cannot delete records.',
  'ns.bound': 'This token is bound to namespace “{ns}” and cannot choose another.', 'ns.default': 'default',
  'removed': ' ({n} deleted since)',
  'region.help': 'Drag the box or its corners, or draw a new one on the picture: the search reruns when you let go. Keyboard: arrows move the box, Shift+arrows resize it, Enter searches.',
  'region.label': 'region (pixels of the image after its EXIF orientation):', 'region.size': 'of a {w} × {h} px image',
  'region.box': 'Box searched, x={x} y={y} w={w} h={h}', 'region.whole': 'the whole image',
  'region.auto.title': 'Let imgsim find the main object and search only that (region=auto)',
  'region.whole.title': 'Search the whole image (region=whole)',
  'dups.threshold': 'default: the duplicate threshold',
  'dups.help': 'Two records are duplicates when their images have the same MD5 or score at least the minimum score. A scan reads the whole namespace; searches keep answering meanwhile.',
  'no.write.dups': 'This token has no write right, so it cannot start a scan or delete records.',
  'dups.none': 'This namespace has no finished scan yet: press Scan for duplicates to find its duplicate groups.',
  'dups.none.read': 'This namespace has no finished scan yet; a token with the write right can start one.',
  'dups.clean': 'No duplicate groups are left.', 'dups.found.none': 'The scan found no duplicates.',
  'dups.summary': 'Scan of {when}: {groups} duplicate groups holding {records} records, of {total} scanned (min score {score})',
  'dups.queued': 'The scan is queued and starts soon…', 'dups.running': 'Scanning: {done} / {total} records read',
  'dups.starting': 'Starting the scan…', 'dups.done': 'The scan finished in {s} s: {groups} duplicate groups.',
  'dups.done.one': 'The scan finished in {s} s: 1 duplicate group.',
  'dups.summary.one': 'Scan of {when}: 1 duplicate group holding {records} records, of {total} scanned (min score {score})',
  'dups.failed': 'The scan failed: ', 'dups.group': '{n} records', 'dups.capped': '{shown} of {size} listed',
  'dups.delete.chosen': 'Delete chosen ({n})', 'dups.choose.first': 'Choose the records to delete first.',
  'confirm.dups': 'Delete {n} records? This cannot be undone.', 'confirm.dups.one': 'Delete 1 record? This cannot be undone.',
  'confirm.dups.keep': 'Delete {n} records? Id {id} (key “{key}”) stays, the others of its group go. This cannot be undone.',
  'confirm.dups.keep.one': 'Delete 1 record? Id {id} (key “{key}”) stays, the other of its group goes. This cannot be undone.',
  'keep.label': 'Keep id {id}, delete the rest of its group', 'choose.label': 'Choose id {id}'
};
var lang = 'en';

function t(key, vars) {
  var text = (lang === 'zh' && ZH[key]) || EN[key] || key;
  Object.keys(vars || {}).forEach(function (name) { text = text.split('{' + name + '}').join(String(vars[name])); });
  return text;
}

function applyLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.querySelectorAll('[data-i18n]').forEach(function (node) { node.textContent = t(node.getAttribute('data-i18n')); });
  document.querySelectorAll('[data-i18n-placeholder]').forEach(function (node) {
    node.placeholder = t(node.getAttribute('data-i18n-placeholder'));
  });
  var toggle = byId('lang');
  toggle.textContent = lang === 'zh' ? 'English' : '中文';
  toggle.lang = lang === 'zh' ? 'en' : 'zh';
  toggle.setAttribute('aria-label', lang === 'zh' ? 'Switch to English' : '切换到中文');
  byId('region-auto').title = t('region.auto.title');
  byId('region-whole').title = t('region.whole.title');
  applyRights();
  renderRegion();
  renderDups(true);
}

// ---------------------------------------------------------------- small DOM helpers
function byId(id) { return document.getElementById(id); }

function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (name) {
    if (name === 'text') { node.textContent = attrs.text; } else if (name === 'className') { node.className = attrs.className; } else if (name.slice(0, 2) === 'on') { node.addEventListener(name.slice(2), attrs[name]); } else { node.setAttribute(name, attrs[name]); }
  });
  (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
  return node;
}

function showMsg(node, text, kind, code) {
  node.hidden = !text;
  node.className = 'msg' + (kind ? ' msg-' + kind : '');
  node.textContent = text || '';
  if (code) { node.appendChild(el('span', { className: 'msg-code', text: 'HTTP ' + code })); }
}

function showError(node, err) { showMsg(node, err.message, 'error', err.status || null); }

// ---------------------------------------------------------------- API calls
function ApiError(message, status, data) { this.message = message; this.status = status; this.data = data; }
ApiError.prototype = Object.create(Error.prototype);

function authHeaders() { return state.token ? { token: state.token } : {}; }

function withNamespace(body) {
  var ns = byId('namespace').value.trim();
  if (ns) { body.namespace = ns; }
  return body;
}

// The namespace an admin chose, for GET endpoints (thumb, scan state), which take it in the query string.
function namespaceQuery() {
  var ns = byId('namespace').value.trim();
  return ns ? '?namespace=' + encodeURIComponent(ns) : '';
}

function readEnvelope(res, text) {
  var body = null;
  try { body = JSON.parse(text); } catch (e) { body = null; }
  var msg = body && typeof body.msg === 'string' ? body.msg : (text || res.statusText).slice(0, 500);
  if (res.status === 401) {
    // Only the first refusal locks and is shown: calls still in flight, answered after the lock, were sent
    // without the token and would replace "invalid token" with "missing token".
    if (state.token !== null) { lock(msg); }
    throw new ApiError(msg, 401);
  }
  if (!res.ok || !body) { throw new ApiError(msg, res.status, body ? body.data : null); }
  return body;
}

// POST (or GET) an API path; resolves with the {code, msg, data} envelope, rejects with ApiError.
function call(path, opts) {
  opts = opts || {};
  var init = { method: opts.method || 'POST', headers: authHeaders(), cache: 'no-store', credentials: 'same-origin' };
  if (opts.form) {
    init.body = opts.form;
  } else if (opts.json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.json);
  }
  return fetch(path, init).then(function (res) {
    return res.text().then(function (text) { return readEnvelope(res, text); });
  }, function (err) {
    throw new ApiError(t('unreachable') + ': ' + err.message, 0);
  });
}

// ---------------------------------------------------------------- thumbnails (fetched with the token header)
var thumbCache = new Map();
var thumbQueue = [];
var thumbActive = 0;

function pumpThumbs() {
  while (thumbActive < THUMB_PARALLEL && thumbQueue.length) {
    var job = thumbQueue.shift();
    thumbActive += 1;
    fetchThumb(job.id).then(job.resolve, function () { job.resolve(null); }).then(function () {
      thumbActive -= 1;
      pumpThumbs();
    });
  }
}

function fetchThumb(id) {
  return fetch(API + 'thumb/' + encodeURIComponent(id) + namespaceQuery(), { headers: authHeaders(), credentials: 'same-origin' })
    .then(function (res) {
      if (res.status === 401) {
        return res.text().then(function (text) { readEnvelope(res, text); return null; });
      }
      if (!res.ok) { return null; } // 404: no thumbnail (yet): the placeholder stays
      return res.blob().then(function (blob) {
        return blob.type.indexOf('image/') === 0 ? URL.createObjectURL(blob) : null;
      });
    });
}

function thumbUrl(id) {
  var key = String(id);
  if (thumbCache.has(key)) { return thumbCache.get(key); }
  var promise = new Promise(function (resolve) { thumbQueue.push({ id: key, resolve: resolve }); pumpThumbs(); });
  thumbCache.set(key, promise);
  promise.then(function (url) { if (!url) { thumbCache.delete(key); } });
  if (thumbCache.size > THUMB_CACHE_MAX) { dropThumb(thumbCache.keys().next().value); }
  return promise;
}

function dropThumb(key) {
  var promise = thumbCache.get(key);
  thumbCache.delete(key);
  if (promise) { promise.then(function (url) { if (url) { URL.revokeObjectURL(url); } }); }
}

function clearThumbs() { Array.from(thumbCache.keys()).forEach(dropThumb); }

function thumbBox(record) {
  var box = el('div', { className: 'thumb loading', 'data-testid': 'thumb' });
  thumbUrl(record.id).then(function (url) {
    box.classList.remove('loading');
    if (url) {
      box.appendChild(el('img', { src: url, alt: 'key ' + record.key + ', id ' + record.id, 'data-testid': 'thumb-img', decoding: 'async' }));
    } else {
      box.classList.add('placeholder');
      box.appendChild(el('span', { text: t('No preview'), 'data-testid': 'thumb-placeholder' }));
    }
  });
  return box;
}

// ---------------------------------------------------------------- login / logout
function lock(message) {
  state.token = null;
  state.grant = null;
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage disabled: nothing to clear */ }
  clearThumbs();
  clearRecords();
  byId('app').hidden = true;
  byId('login').hidden = false;
  var error = byId('login-error');
  error.hidden = !message;
  error.textContent = message ? t('token.refused') + message : '';
  byId('token-input').value = '';
  byId('token-input').focus();
}

// The records a token was shown leave the page with it: the next token (maybe another tenant's) starts empty.
function clearRecords() {
  state.search = null;
  hideRegion();
  state.browseKey = null;
  state.browseRecords = [];
  byId('search-results').textContent = '';
  byId('search-empty').hidden = false;
  byId('browse-results').textContent = '';
  byId('browse-head').hidden = true;
  ['search-msg', 'browse-msg', 'catalog-msg'].forEach(function (id) { showMsg(byId(id), '', null); });
  byId('count-chip').textContent = '–';
  byId('count-value').textContent = '–';
  resetDups();
}

function unlock() {
  byId('login').hidden = true;
  byId('login-error').hidden = true;
  byId('app').hidden = false;
  applyRights();
  loadRights().then(function () {
    if (byId('app').hidden) { return; } // whoami answered 401: the prompt is back, with the refusal
    showView(viewFromHash());
    refreshCount();
  });
}

// ---------------------------------------------------------------- what this token may do
// Until whoami answers (or on a service without it) every control stays enabled, as before: the API's own
// 403 remains the last word either way.
function loadRights() {
  return call(API + 'whoami', { method: 'GET' }).then(function (body) {
    var data = body && body.data;
    state.grant = data && Array.isArray(data.rights) ? data : null;
  }, function () { state.grant = null; }).then(applyRights);
}

function canWrite() { return !state.grant || state.grant.rights.indexOf('write') >= 0; }

function boundNamespace() {
  return state.grant && typeof state.grant.namespace === 'string' ? state.grant.namespace : null;
}

// A control that needs the write right may also need something to act on.
function lacksWork(control) {
  if (control.id === 'browse-delete-key') { return !state.browseRecords.length; }
  if (control.id === 'dups-delete-chosen') { return !state.dups || !state.dups.chosen.size || state.dups.busy; }
  if (control.id === 'dups-scan') { return !!(state.dups && state.dups.polling); }
  if (control.classList.contains('dup-action')) { return !!(state.dups && state.dups.busy); }
  return false;
}

function applyRights() {
  var write = canWrite();
  document.querySelectorAll('.rights-note').forEach(function (note) { note.hidden = write; });
  document.querySelectorAll('[data-needs=write]').forEach(function (button) {
    var note = button.getAttribute('data-note') || 'rights-note';
    button.disabled = !write || lacksWork(button);
    if (write) { button.removeAttribute('title'); } else { button.title = t(note === 'rights-note' ? 'no.write' : 'no.write.dups'); }
    if (write) { button.removeAttribute('aria-describedby'); } else { button.setAttribute('aria-describedby', note); }
  });
  var ns = byId('namespace');
  var bound = boundNamespace();
  ns.disabled = bound !== null;
  if (bound !== null) {
    ns.value = ''; // the token's namespace is used without naming it; another would be refused
    ns.placeholder = bound || t('ns.default');
    ns.title = t('ns.bound', { ns: bound || t('ns.default') });
  } else {
    ns.placeholder = t('ns.placeholder');
    ns.removeAttribute('title');
  }
}

function onLogin(event) {
  event.preventDefault();
  state.token = byId('token-input').value.trim();
  var submit = byId('login-form').querySelector('button[type=submit]');
  submit.disabled = true;
  // Any answer but 401 means the token passed the check (a 503 from Milvus still proves it).
  call(API + 'count', { json: withNamespace({}) }).then(accept, function (err) {
    if (err.status !== 401) { accept(); }
  }).then(function () { submit.disabled = false; });
}

function accept() {
  try { sessionStorage.setItem(TOKEN_KEY, state.token); } catch (e) { /* still works for this page view */ }
  unlock();
}

// ---------------------------------------------------------------- views
function viewFromHash() {
  var name = window.location.hash.replace('#', '');
  return ['search', 'browse', 'dups', 'catalog'].indexOf(name) >= 0 ? name : 'search';
}

function showView(name) {
  state.view = name;
  document.querySelectorAll('.view').forEach(function (section) { section.hidden = section.id !== 'view-' + name; });
  document.querySelectorAll('[role=tab]').forEach(function (tab) {
    var selected = tab.getAttribute('data-view') === name;
    tab.setAttribute('aria-selected', selected ? 'true' : 'false');
    tab.tabIndex = selected ? 0 : -1;
  });
  if (window.location.hash !== '#' + name) { history.replaceState(null, '', '#' + name); }
  if (name === 'catalog') { loadCatalog(); }
  if (name === 'dups' && !state.dups.loaded && !state.dups.polling) { loadDups(); }
}

function onTabKey(event) {
  var tabs = Array.from(document.querySelectorAll('[role=tab]'));
  var index = tabs.indexOf(event.target);
  var step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (index < 0 || !step) { return; }
  var next = tabs[(index + step + tabs.length) % tabs.length];
  next.focus();
  showView(next.getAttribute('data-view'));
}

function refreshCount() {
  return call(API + 'count', { json: withNamespace({}) }).then(function (body) {
    byId('count-chip').textContent = Number(body.data).toLocaleString();
    byId('count-value').textContent = Number(body.data).toLocaleString();
    return body.data;
  }, function () { byId('count-chip').textContent = '?'; });
}

// ---------------------------------------------------------------- search
function selectedKind() { return byId('search-form').querySelector('input[name=kind]:checked').value; }

function onKindChange() {
  var kind = selectedKind();
  document.querySelectorAll('.kind-pane').forEach(function (pane) { pane.hidden = pane.getAttribute('data-kind') !== kind; });
}

function setKind(kind) {
  byId('search-form').querySelector('input[name=kind][value=' + kind + ']').checked = true;
  onKindChange();
}

// Only the options the user set are sent, so a service without the new fields sees today's request.
function readOptions() {
  var opts = {};
  var limit = byId('opt-limit').value.trim();
  var minScore = byId('opt-min-score').value.trim();
  var filter = byId('opt-filter').value.trim();
  if (limit) { opts.limit = Number(limit); }
  if (minScore) { opts.min_score = Number(minScore); }
  if (filter) {
    var parsed;
    try { parsed = JSON.parse(filter); } catch (e) { throw new ApiError(t('filter.bad') + e.message, 0); }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) { throw new ApiError(t('filter.bad') + filter, 0); }
    opts.filter = parsed;
  }
  if (byId('opt-group').checked) { opts.group_by_key = true; }
  return withNamespace(opts);
}

function toForm(file, fields) {
  var form = new FormData();
  form.append('file', file, file.name || 'pasted-image.png');
  Object.keys(fields).forEach(function (name) {
    var value = fields[name];
    form.append(name, typeof value === 'object' ? JSON.stringify(value) : String(value));
  });
  return form;
}

function textInput(id) {
  var value = byId(id).value.trim();
  if (!value) { throw new ApiError(t('Enter a value first.'), 0); }
  return value;
}

function buildSearch(kind, opts) {
  if (kind === 'image') {
    if (!state.query) { throw new ApiError(t('Choose an image first.'), 0); }
    withRegion(opts, state.query);
    return { path: 'search/file', req: { form: toForm(state.query, opts) }, query: state.query };
  }
  if (kind === 'url' || kind === 'path') {
    opts[kind] = textInput('q-' + kind);
    var query = kind + ':' + opts[kind];
    withRegion(opts, query);
    return { path: 'search/' + kind, req: { json: opts }, query: query };
  }
  var id = textInput('q-id');
  if (!/^[0-9]{1,16}$/.test(id) || !Number.isSafeInteger(Number(id)) || Number(id) < 1) { throw new ApiError(t('id.bad'), 0); }
  opts.id = Number(id);
  return { path: 'search/id', req: { json: opts } };
}

function runSearch(event) {
  if (event) { event.preventDefault(); }
  var msg = byId('search-msg');
  var plan;
  try { plan = buildSearch(selectedKind(), readOptions()); } catch (err) { showError(msg, err); return Promise.resolve(); }
  showMsg(msg, t('Searching…'), 'info');
  var started = performance.now();
  var namespace = byId('namespace').value.trim();
  // Only the latest search is shown: a box dragged twice quickly must not end with the first box's hits.
  var seq = ++state.searchSeq;
  byId('region-pane').classList.add('busy');
  return call(API + plan.path, plan.req).then(function (body) {
    if (seq !== state.searchSeq) { return null; }
    var hits = Array.isArray(body.data) ? body.data : [];
    renderHits(hits);
    state.search = { namespace: namespace, found: hits.length, removed: 0, ms: Math.round(performance.now() - started) };
    showSearchSummary();
    return showRegion(plan.query, body.region);
  }, function (err) {
    if (seq !== state.searchSeq) { return; }
    state.search = null;
    renderHits([]);
    showError(msg, err);
    if (!plan.query) { hideRegion(); } else { renderRegion(); } // the box stays where the user left it
  }).then(function () { if (seq === state.searchSeq) { byId('region-pane').classList.remove('busy'); } });
}

function showSearchSummary() {
  var s = state.search;
  if (!s) { return; }
  var left = s.found - s.removed;
  var text = s.found ? t(left === 1 ? 'n.results.one' : 'n.results', { n: left, ms: s.ms }) : t('No similar images found.');
  showMsg(byId('search-msg'), text + (s.removed ? t('removed', { n: s.removed }) : ''), 'ok');
}

// Records deleted in this namespace leave the search results and the thumbnail cache at once (the key's
// view reloads and the counts refresh in afterDelete). A whole key takes its other records with it too.
function forgetRecords(ids, key, namespace) {
  var gone = ids.map(String);
  var removed = 0;
  document.querySelectorAll('#search-results [data-testid=result-card]').forEach(function (card) {
    var sameKey = key !== null && state.search && state.search.namespace === namespace && card.getAttribute('data-key') === key;
    if (gone.indexOf(card.getAttribute('data-id')) >= 0 || sameKey) {
      card.remove();
      removed += 1;
    }
  });
  gone.forEach(dropThumb);
  dropFromDups(ids, key, namespace);
  if (removed && state.search) {
    state.search.removed += removed;
    showSearchSummary();
  }
}

function renderHits(hits) {
  var grid = byId('search-results');
  grid.textContent = '';
  byId('search-empty').hidden = true;
  hits.forEach(function (hit) { grid.appendChild(hitCard(hit)); });
}

function field(label, value, testid, node) {
  return [el('dt', { text: label }), el('dd', { 'data-testid': testid, title: String(value) }, [node || document.createTextNode(String(value))])];
}

function attrsList(attrs) {
  if (!attrs || typeof attrs !== 'object' || !Object.keys(attrs).length) { return null; }
  return el('ul', { className: 'attrs', 'data-testid': 'attrs' }, Object.keys(attrs).map(function (name) {
    return el('li', { text: name + ': ' + (Array.isArray(attrs[name]) ? attrs[name].join(', ') : String(attrs[name])) });
  }));
}

function scoreBlock(hit) {
  var score = Number(hit.score);
  var bar = el('span', { className: 'scorebar-fill' });
  bar.style.width = Math.max(0, Math.min(1, score)) * 100 + '%'; // CSSOM, which the CSP allows
  var row = el('div', { className: 'score-row' }, [
    el('span', { className: 'score', 'data-testid': 'result-score', title: t('score') + ' ' + score, text: score.toFixed(3) }),
    hit.match ? el('span', { className: 'badge badge-' + String(hit.match), 'data-testid': 'result-match', text: String(hit.match) }) : null
  ]);
  return el('div', {}, [row, el('div', { className: 'scorebar', 'aria-hidden': 'true' }, [bar])]);
}

function keyLink(key) {
  return el('button', { type: 'button', className: 'linklike', text: key, onclick: function () { browseKey(key); } });
}

function hitCard(hit) {
  var dl = el('dl', { className: 'kv kv-card' });
  field('key', hit.key, 'result-key', keyLink(hit.key)).forEach(dl.appendChild, dl);
  field('filepath', hit.filepath || '—', 'result-filepath').forEach(dl.appendChild, dl);
  field('id', hit.id, 'result-id').forEach(dl.appendChild, dl);
  var similar = el('button', { type: 'button', className: 'btn btn-small', 'data-testid': 'result-similar', text: t('Find similar'),
    onclick: function () { setKind('id'); byId('q-id').value = String(hit.id); runSearch(); } });
  return el('article', { className: 'card', 'data-testid': 'result-card', 'data-id': String(hit.id), 'data-key': String(hit.key) },
    [thumbBox(hit), el('div', { className: 'card-body' }, [scoreBlock(hit), dl, attrsList(hit.attrs), similar])]);
}

function setQuery(file) {
  var msg = byId('search-msg');
  if (!file || (file.type && file.type.indexOf('image/') !== 0)) { showMsg(msg, t('not.image'), 'error'); return; }
  if (state.queryUrl) { URL.revokeObjectURL(state.queryUrl); }
  state.query = file;
  state.queryUrl = URL.createObjectURL(file);
  hideRegion(); // until this image's answer says which box was searched
  var preview = byId('query-preview');
  preview.src = state.queryUrl;
  preview.alt = file.name || 'pasted image';
  preview.hidden = false;
  setKind('image');
  runSearch();
}

function imageFrom(list) {
  return Array.from(list || []).filter(function (f) { return f && f.type && f.type.indexOf('image/') === 0; })[0] || null;
}

function wireSearch() {
  var zone = byId('dropzone');
  var input = byId('file-input');
  byId('search-form').addEventListener('submit', runSearch);
  byId('search-form').querySelectorAll('input[name=kind]').forEach(function (radio) { radio.addEventListener('change', onKindChange); });
  zone.addEventListener('click', function () { input.click(); });
  zone.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); input.click(); } });
  input.addEventListener('change', function () { if (input.files[0]) { setQuery(input.files[0]); } input.value = ''; });
  ['dragenter', 'dragover'].forEach(function (name) { zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add('over'); }); });
  ['dragleave', 'drop'].forEach(function (name) { zone.addEventListener(name, function () { zone.classList.remove('over'); }); });
  zone.addEventListener('drop', function (e) { e.preventDefault(); setQuery(imageFrom(e.dataTransfer.files) || e.dataTransfer.files[0]); });
  // A file dropped beside the zone must not make the browser leave the console to display it.
  window.addEventListener('dragover', function (e) { e.preventDefault(); });
  window.addEventListener('drop', function (e) { e.preventDefault(); });
  document.addEventListener('paste', function (e) {
    var file = e.clipboardData && imageFrom(Array.from(e.clipboardData.items || []).map(function (item) { return item.kind === 'file' ? item.getAsFile() : null; }));
    if (file && !byId('app').hidden) { e.preventDefault(); showView('search'); setQuery(file); }
  });
}

// ---------------------------------------------------------------- the box searched (issue 20: region)
// After a search by an image, the pane shows the box the answer says was searched (envelope `region`, pixels of
// the image after its EXIF orientation; a service without regions sends none, which means the whole image).
// The box is placed in percent of the image's natural size, which Chromium reports after EXIF orientation, so
// it follows the picture at any displayed size. Dragging, resizing or drawing it asks for that box, and the
// search reruns on release; the ask holds for that one query (a new image or URL starts with none sent).
var drag = null;

function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

function validBox(region) {
  if (!region || typeof region !== 'object') { return null; }
  var names = ['x', 'y', 'w', 'h'];
  if (!names.every(function (name) { return typeof region[name] === 'number' && isFinite(region[name]); })) { return null; }
  return { x: region.x, y: region.y, w: region.w, h: region.h };
}

function sameBox(a, b) { return !!a && !!b && a.x === b.x && a.y === b.y && a.w === b.w && a.h === b.h; }

function withRegion(opts, query) {
  if (state.region && state.region.query === query) { opts.region = state.region.value; }
  return opts;
}

function hideRegion() {
  state.shown = null;
  drag = null;
  byId('region-pane').hidden = true;
}

// `query` is the File searched, or 'url:<url>' / 'path:<path>' (no picture: the page may not load those).
function showRegion(query, region) {
  if (!query) { hideRegion(); return null; }
  var image = typeof query !== 'string';
  var shown = { query: query, box: validBox(region), searched: validBox(region), width: 0, height: 0, image: image };
  state.shown = shown;
  byId('region-pane').hidden = false;
  if (!image) { renderRegion(); return null; }
  var img = byId('region-img');
  if (img.getAttribute('src') !== state.queryUrl) { img.src = state.queryUrl; }
  img.alt = query.name || 'pasted image';
  return img.decode().catch(function () { return null; }).then(function () {
    if (state.shown !== shown) { return; }
    shown.width = img.naturalWidth;
    shown.height = img.naturalHeight;
    if (!shown.box && shown.width) { shown.box = shown.searched = { x: 0, y: 0, w: shown.width, h: shown.height }; }
    renderRegion();
  });
}

function renderRegion() {
  var shown = state.shown;
  if (!shown) { return; }
  var box = drag ? drag.box : shown.box;
  var drawn = shown.image && shown.width > 0;
  byId('region-stage').hidden = !drawn;
  var node = byId('region-box');
  node.hidden = !box;
  if (box && drawn) {
    node.style.left = (box.x / shown.width) * 100 + '%'; // CSSOM, which the CSP allows
    node.style.top = (box.y / shown.height) * 100 + '%';
    node.style.width = (box.w / shown.width) * 100 + '%';
    node.style.height = (box.h / shown.height) * 100 + '%';
  }
  byId('region-coords').textContent = box ? JSON.stringify(box) : t('region.whole');
  byId('region-size').textContent = drawn ? t('region.size', { w: shown.width, h: shown.height }) : '';
  node.setAttribute('aria-label', box ? t('region.box', box) : t('region.whole'));
  var asked = state.region && state.region.query === shown.query ? state.region.value : null;
  byId('region-auto').setAttribute('aria-pressed', asked === 'auto' ? 'true' : 'false');
  byId('region-whole').setAttribute('aria-pressed', asked === 'whole' ? 'true' : 'false');
  byId('region-pane').classList.toggle('edited', !!box && !sameBox(box, shown.searched));
}

// Search the shown query again with `value` ('auto', 'whole' or a box) as its region.
function askRegion(value) {
  var shown = state.shown;
  if (!shown) { return Promise.resolve(); }
  state.region = { query: shown.query, value: value };
  if (shown.image) {
    setKind('image');
  } else {
    var kind = shown.query.slice(0, shown.query.indexOf(':'));
    setKind(kind);
    byId('q-' + kind).value = shown.query.slice(kind.length + 1);
  }
  renderRegion();
  return runSearch();
}

function imagePoint(event) {
  var rect = byId('region-img').getBoundingClientRect();
  var shown = state.shown;
  return {
    x: clamp(((event.clientX - rect.left) * shown.width) / rect.width, 0, shown.width),
    y: clamp(((event.clientY - rect.top) * shown.height) / rect.height, 0, shown.height)
  };
}

// The box between two points, in whole pixels.
function spanBox(a, b) {
  var x0 = Math.round(Math.min(a.x, b.x));
  var y0 = Math.round(Math.min(a.y, b.y));
  return { x: x0, y: y0, w: Math.round(Math.max(a.x, b.x)) - x0, h: Math.round(Math.max(a.y, b.y)) - y0 };
}

function onStageDown(event) {
  var shown = state.shown;
  if (!shown || !shown.width || event.button !== 0) { return; }
  event.preventDefault(); // no native image drag, no text selection
  var box = shown.box || { x: 0, y: 0, w: shown.width, h: shown.height };
  var point = imagePoint(event);
  var corner = event.target.getAttribute('data-corner');
  // A box covering the whole image cannot move: pressing inside it draws a new one instead.
  var whole = box.w >= shown.width && box.h >= shown.height;
  if (corner) {
    var anchor = { x: corner[1] === 'w' ? box.x + box.w : box.x, y: corner[0] === 'n' ? box.y + box.h : box.y };
    var held = { x: corner[1] === 'w' ? box.x : box.x + box.w, y: corner[0] === 'n' ? box.y : box.y + box.h };
    // The corner keeps its distance from the pointer, so grabbing a handle off-centre does not make it jump.
    drag = { mode: 'resize', anchor: anchor, offset: { x: held.x - point.x, y: held.y - point.y }, start: box, box: box };
  } else if (event.target === byId('region-box') && !whole) {
    drag = { mode: 'move', from: point, start: box, box: box };
  } else {
    drag = { mode: 'draw', anchor: point, start: box, box: spanBox(point, point) };
  }
  byId('region-stage').setPointerCapture(event.pointerId);
  byId('region-stage').classList.add('dragging');
  renderRegion();
}

function onStageMove(event) {
  if (!drag) { return; }
  var shown = state.shown;
  var point = imagePoint(event);
  if (drag.mode === 'move') {
    var start = drag.start;
    drag.box = {
      x: Math.round(clamp(start.x + point.x - drag.from.x, 0, shown.width - start.w)),
      y: Math.round(clamp(start.y + point.y - drag.from.y, 0, shown.height - start.h)),
      w: start.w, h: start.h
    };
  } else if (drag.mode === 'resize') {
    var corner = { x: clamp(point.x + drag.offset.x, 0, shown.width), y: clamp(point.y + drag.offset.y, 0, shown.height) };
    drag.box = spanBox(drag.anchor, corner);
  } else {
    drag.box = spanBox(drag.anchor, point);
  }
  renderRegion();
}

function onStageUp(event) {
  if (!drag) { return; }
  if (event.type === 'pointerup') { onStageMove(event); }
  var done = drag;
  drag = null;
  byId('region-stage').classList.remove('dragging');
  var rect = byId('region-img').getBoundingClientRect();
  var least = Math.max(1, (4 * state.shown.width) / Math.max(1, rect.width)); // a click is not a box
  var box = done.box;
  if (event.type !== 'pointerup' || box.w < least || box.h < least || sameBox(box, done.start)) {
    renderRegion();
    return;
  }
  state.shown.box = box;
  askRegion(box);
}

// Keyboard: arrows move the box, Shift+arrows resize it (a 1% step), Enter searches with it.
function onBoxKey(event) {
  var shown = state.shown;
  if (!shown || !shown.box || !shown.width) { return; }
  if (event.key === 'Enter') { event.preventDefault(); askRegion(shown.box); return; }
  var step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
  if (!step) { return; }
  event.preventDefault();
  var px = Math.max(1, Math.round(Math.max(shown.width, shown.height) / 100));
  var b = shown.box;
  if (event.shiftKey) {
    shown.box = { x: b.x, y: b.y, w: clamp(b.w + step[0] * px, 1, shown.width - b.x), h: clamp(b.h + step[1] * px, 1, shown.height - b.y) };
  } else {
    shown.box = { x: clamp(b.x + step[0] * px, 0, shown.width - b.w), y: clamp(b.y + step[1] * px, 0, shown.height - b.h), w: b.w, h: b.h };
  }
  renderRegion();
}

function wireRegion() {
  var stage = byId('region-stage');
  stage.addEventListener('pointerdown', onStageDown);
  stage.addEventListener('pointermove', onStageMove);
  stage.addEventListener('pointerup', onStageUp);
  stage.addEventListener('pointercancel', onStageUp);
  stage.addEventListener('dragstart', function (e) { e.preventDefault(); });
  byId('region-box').addEventListener('keydown', onBoxKey);
  byId('region-auto').addEventListener('click', function () { askRegion('auto'); });
  byId('region-whole').addEventListener('click', function () { askRegion('whole'); });
}

// ---------------------------------------------------------------- browse a key
function browseKey(key) {
  byId('browse-key').value = key;
  showView('browse');
  return loadKey(key);
}

function loadKey(key) {
  var msg = byId('browse-msg');
  if (!key) { showMsg(msg, t('Enter a key first.'), 'error'); return Promise.resolve(); }
  state.browseKey = key;
  showMsg(msg, t('Loading…'), 'info');
  return call(API + 'get/key', { json: withNamespace({ key: [key] }) }).then(function (body) {
    state.browseRecords = Array.isArray(body.data) ? body.data : [];
    renderKey(key, state.browseRecords);
    showMsg(msg, '', null);
  }, function (err) { renderKey(key, null); showError(msg, err); });
}

function renderKey(key, records) {
  var grid = byId('browse-results');
  grid.textContent = '';
  byId('browse-head').hidden = !records;
  if (!records) { return; }
  var head = records.length === 1 ? 'key.head.one' : 'key.head';
  byId('browse-title').textContent = records.length ? t(head, { key: key, n: records.length }) : t('key.none', { key: key });
  records.forEach(function (record) { grid.appendChild(recordCard(record)); });
  applyRights(); // the delete buttons: enabled only with records and the write right
}

function recordCard(record) {
  var dl = el('dl', { className: 'kv kv-card' });
  field('id', record.id, 'record-id').forEach(dl.appendChild, dl);
  field('filepath', record.filepath || '—', 'record-filepath').forEach(dl.appendChild, dl);
  if (record.md5) { field('md5', record.md5, 'record-md5').forEach(dl.appendChild, dl); }
  var remove = el('button', { type: 'button', className: 'btn btn-danger btn-small', 'data-testid': 'browse-delete-id', 'data-needs': 'write',
    text: t('Delete'), 'aria-label': t('Delete') + ' id ' + record.id, onclick: function () { deleteRecord(record); } });
  return el('article', { className: 'card', 'data-testid': 'browse-card', 'data-id': String(record.id) },
    [thumbBox(record), el('div', { className: 'card-body' }, [dl, attrsList(record.attrs), remove])]);
}

function afterDelete(body, ids, key, namespace) {
  forgetRecords(ids, key, namespace);
  showMsg(byId('browse-msg'), t(body.data === 1 ? 'deleted.one' : 'deleted', { n: body.data }), 'ok');
  var msg = byId('browse-msg').textContent;
  return Promise.all([loadKey(state.browseKey), refreshCount()]).then(function () { showMsg(byId('browse-msg'), msg, 'ok'); });
}

function deleteRecord(record) {
  if (!canWrite() || !window.confirm(t('confirm.id', { id: record.id, key: record.key }))) { return Promise.resolve(); }
  var namespace = byId('namespace').value.trim();
  return call(API + 'del/id', { json: withNamespace({ id: [record.id] }) }).then(function (body) {
    return afterDelete(body, [record.id], null, namespace);
  }, function (err) { showError(byId('browse-msg'), err); });
}

function deleteKey() {
  var key = state.browseKey;
  var n = state.browseRecords.length;
  var question = t(n === 1 ? 'confirm.key.one' : 'confirm.key', { key: key, n: n, id: n ? state.browseRecords[0].id : '' });
  if (!key || !n || !canWrite() || !window.confirm(question)) { return Promise.resolve(); }
  var namespace = byId('namespace').value.trim();
  var ids = state.browseRecords.map(function (record) { return record.id; });
  return call(API + 'del/key', { json: withNamespace({ key: [key] }) }).then(function (body) {
    return afterDelete(body, ids, key, namespace);
  }, function (err) { showError(byId('browse-msg'), err); });
}

// ---------------------------------------------------------------- duplicates
// A scan is a job of the service: POST duplicates/scan answers its id, GET duplicates/scan/<job> its progress,
// POST duplicates the groups of the namespace's latest finished scan, a page at a time. The groups shown are
// those of one namespace (the one chosen when they were loaded); records deleted here leave them at once.
function resetDups() {
  if (state.dups && state.dups.timer) { clearTimeout(state.dups.timer); }
  state.dups = { loaded: false, polling: null, timer: null, scan: null, next: null, groups: [], chosen: new Set(),
    removed: 0, busy: false, namespace: '', seq: (state.dups ? state.dups.seq : 0) + 1, empty: null };
  if (!byId('dups-groups')) { return; }
  byId('dups-groups').textContent = '';
  byId('dups-progress').hidden = true;
  showMsg(byId('dups-msg'), '', null);
  renderDups();
}

function dupsBody(extra) {
  var body = withNamespace({ limit: DUPS_PAGE });
  Object.keys(extra || {}).forEach(function (name) { body[name] = extra[name]; });
  return body;
}

// The first page of groups (replacing those shown), or the next one when `more`.
function loadDups(more) {
  var d = state.dups;
  var seq = d.seq;
  var msg = byId('dups-msg');
  if (!more) { showMsg(msg, t('Loading…'), 'info'); }
  d.loading = true;
  renderDups();
  var body = more ? dupsBody({ cursor: d.next }) : dupsBody();
  return call(API + 'duplicates', { json: body }).then(function (answer) {
    if (seq !== state.dups.seq) { return; }
    var data = answer.data || {};
    if (!more) {
      d.groups = [];
      d.chosen.clear();
      d.removed = 0;
      byId('dups-groups').textContent = '';
      showMsg(msg, '', null);
    }
    d.loaded = true;
    d.empty = null;
    d.scan = data.scan || d.scan;
    d.next = data.next || null;
    d.namespace = body.namespace || '';
    (Array.isArray(data.groups) ? data.groups : []).forEach(function (group) {
      var shown = { size: Number(group.size), capped: !!group.capped, records: Array.isArray(group.records) ? group.records : [] };
      d.groups.push(shown);
      byId('dups-groups').appendChild(groupBlock(shown));
    });
  }, function (err) {
    if (seq !== state.dups.seq) { return; }
    if (err.status === 404 && !more) { // no_scan: nothing to show yet
      d.loaded = true;
      d.scan = null;
      d.groups = [];
      d.next = null;
      byId('dups-groups').textContent = '';
      d.empty = 'dups.none';
      showMsg(msg, '', null);
    } else if (err.status === 409 && more) { // scan_replaced: a newer scan's groups, from its first page
      return loadDups().then(function () { showError(msg, err); });
    } else {
      showError(msg, err);
    }
  }).then(function () {
    if (seq === state.dups.seq) { d.loading = false; renderDups(); }
  });
}

// `relabel`: the language changed, so the cards are drawn again too (their thumbnails come from the cache).
function renderDups(relabel) {
  var d = state.dups;
  if (!d || !byId('dups-groups')) { return; }
  var scan = d.scan;
  var shownGroups = d.groups.filter(function (g) { return g.records.length >= 2; });
  byId('dups-head').hidden = !scan;
  if (scan) {
    var when = scan.finished ? new Date(scan.finished).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB', { dateStyle: 'medium', timeStyle: 'short' }) : '—';
    byId('dups-summary').textContent = t(scan.groups === 1 ? 'dups.summary.one' : 'dups.summary', { when: when, groups: show(scan.groups),
      records: show(scan.grouped_records), total: show(scan.records_total), score: show(scan.min_score) }) +
      (d.removed ? t('removed', { n: d.removed }) : '');
  }
  byId('dups-delete-chosen').textContent = t('dups.delete.chosen', { n: d.chosen.size });
  byId('dups-more').hidden = !d.next;
  byId('dups-more').disabled = !!d.loading;
  var empty = d.empty || (scan && !shownGroups.length && !d.next ? (scan.groups ? 'dups.clean' : 'dups.found.none') : null);
  byId('dups-empty').hidden = !empty;
  if (empty === 'dups.none' && !canWrite()) { empty = 'dups.none.read'; }
  byId('dups-empty').textContent = empty ? t(empty) : '';
  document.querySelectorAll('#dups-groups [data-testid=dup-group]').forEach(function (node) {
    var group = d.groups[Number(node.getAttribute('data-index'))];
    node.querySelector('.dup-group-head').replaceWith(groupHead(group));
    if (!relabel) { return; }
    node.querySelectorAll('[data-testid=dup-card]').forEach(function (card) {
      var record = group.records.filter(function (r) { return String(r.id) === card.getAttribute('data-id'); })[0];
      if (record) { card.replaceWith(dupCard(record, group)); }
    });
  });
  applyRights();
}

function groupHead(group) {
  var listed = group.records.length;
  return el('header', { className: 'dup-group-head' }, [
    el('h3', { 'data-testid': 'dup-group-size', text: t('dups.group', { n: group.size }) }),
    group.capped ? el('span', { className: 'badge badge-duplicate', 'data-testid': 'dup-capped', text: t('capped') }) : null,
    group.capped ? el('span', { className: 'muted small', text: t('dups.capped', { shown: listed, size: group.size }) }) : null
  ]);
}

function groupBlock(group) {
  var row = el('div', { className: 'dup-row' }, group.records.map(function (record) { return dupCard(record, group); }));
  return el('section', { className: 'panel dup-group', 'data-testid': 'dup-group', 'data-index': String(state.dups.groups.indexOf(group)) },
    [groupHead(group), row]);
}

function dupCard(record, group) {
  var id = String(record.id);
  var d = state.dups;
  var dl = el('dl', { className: 'kv kv-card' });
  field('key', record.key, 'dup-key', keyLink(record.key)).forEach(dl.appendChild, dl);
  field('id', record.id, 'dup-id').forEach(dl.appendChild, dl);
  field('filepath', record.filepath || '—', 'dup-filepath').forEach(dl.appendChild, dl);
  var score = Number(record.score);
  var box = el('input', { type: 'checkbox', className: 'dup-action', 'data-testid': 'dup-choose', 'data-needs': 'write',
    'data-note': 'dups-rights-note', 'aria-label': t('choose.label', { id: id }),
    onchange: function () { if (box.checked) { d.chosen.add(id); } else { d.chosen.delete(id); } renderChosen(); } });
  box.checked = d.chosen.has(id);
  var keep = el('button', { type: 'button', className: 'btn btn-danger btn-small dup-action', 'data-testid': 'dup-keep',
    'data-needs': 'write', 'data-note': 'dups-rights-note', text: t('Keep this one'), 'aria-label': t('keep.label', { id: id }),
    onclick: function () { keepOnly(record, group); } });
  var choose = el('label', { className: 'check' }, [box, el('span', { text: t('Choose') })]);
  return el('article', { className: 'card dup-card' + (box.checked ? ' chosen' : ''), 'data-testid': 'dup-card', 'data-id': id, 'data-key': String(record.key) },
    [thumbBox(record), el('div', { className: 'card-body' }, [
      el('div', { className: 'score-row' }, [el('span', { className: 'score', 'data-testid': 'dup-score', title: t('score') + ' ' + score, text: score.toFixed(3) })]),
      dl, attrsList(record.attrs), el('div', { className: 'dup-actions' }, [choose, keep])])]);
}

function renderChosen() {
  var d = state.dups;
  document.querySelectorAll('#dups-groups [data-testid=dup-card]').forEach(function (card) {
    card.classList.toggle('chosen', d.chosen.has(card.getAttribute('data-id')));
  });
  byId('dups-delete-chosen').textContent = t('dups.delete.chosen', { n: d.chosen.size });
  applyRights();
}

function keepOnly(record, group) {
  var ids = group.records.filter(function (r) { return String(r.id) !== String(record.id); }).map(function (r) { return r.id; });
  var n = ids.length;
  if (!n || !canWrite() || !window.confirm(t(n === 1 ? 'confirm.dups.keep.one' : 'confirm.dups.keep', { n: n, id: record.id, key: record.key }))) {
    return Promise.resolve();
  }
  return deleteDups(ids);
}

function deleteChosen() {
  var d = state.dups;
  var ids = Array.from(d.chosen).map(Number);
  var n = ids.length;
  if (!n) { showMsg(byId('dups-msg'), t('dups.choose.first'), 'error'); return Promise.resolve(); }
  if (!canWrite() || !window.confirm(t(n === 1 ? 'confirm.dups.one' : 'confirm.dups', { n: n }))) { return Promise.resolve(); }
  return deleteDups(ids);
}

// del/id in chunks, one after another; whatever was deleted before a failure still leaves the view.
function deleteDups(ids) {
  var d = state.dups;
  var namespace = d.namespace;
  var msg = byId('dups-msg');
  var deleted = 0;
  var done = [];
  d.busy = true;
  applyRights();
  var chain = Promise.resolve();
  for (var i = 0; i < ids.length; i += DEL_CHUNK) {
    (function (chunk) {
      chain = chain.then(function () {
        var body = { id: chunk };
        if (namespace) { body.namespace = namespace; }
        return call(API + 'del/id', { json: body }).then(function (answer) {
          deleted += Number(answer.data) || 0;
          done = done.concat(chunk);
        });
      });
    })(ids.slice(i, i + DEL_CHUNK));
  }
  return chain.then(function () {
    forgetRecords(done, null, namespace);
    showMsg(msg, t(deleted === 1 ? 'deleted.one' : 'deleted', { n: deleted }), 'ok');
  }, function (err) {
    forgetRecords(done, null, namespace);
    showError(msg, err);
  }).then(function () {
    d.busy = false;
    renderDups();
    refreshCount();
    if (state.browseKey) { loadKey(state.browseKey); } // its cards may be among those gone
  });
}

// Records deleted anywhere in the console leave the groups shown (the same namespace's): a group left with one
// record goes; a whole key deleted takes its records with it.
function dropFromDups(ids, key, namespace) {
  var d = state.dups;
  if (!d || !d.groups.length || namespace !== d.namespace) { return; }
  var gone = ids.map(String);
  var removed = 0;
  d.groups.forEach(function (group) {
    var before = group.records.length;
    group.records = group.records.filter(function (r) { return gone.indexOf(String(r.id)) < 0 && (key === null || String(r.key) !== key); });
    var left = before - group.records.length;
    removed += left;
    group.size -= left;
  });
  gone.forEach(function (id) { d.chosen.delete(id); });
  if (!removed) { return; }
  d.removed += removed;
  document.querySelectorAll('#dups-groups [data-testid=dup-group]').forEach(function (node) {
    var group = d.groups[Number(node.getAttribute('data-index'))];
    if (group.records.length < 2) { node.remove(); return; }
    var keptIds = group.records.map(function (r) { return String(r.id); });
    node.querySelectorAll('[data-testid=dup-card]').forEach(function (card) {
      if (keptIds.indexOf(card.getAttribute('data-id')) < 0) { card.remove(); }
    });
  });
  d.groups.forEach(function (group) { if (group.records.length < 2) { group.records.forEach(function (r) { d.chosen.delete(String(r.id)); }); } });
  renderDups();
}

function startScan(event) {
  if (event) { event.preventDefault(); }
  var d = state.dups;
  if (!canWrite() || d.polling) { return Promise.resolve(); }
  var body = withNamespace({});
  var minScore = byId('dups-min-score').value.trim();
  if (minScore) { body.min_score = Number(minScore); }
  var seq = d.seq;
  showMsg(byId('dups-msg'), t('dups.starting'), 'info');
  d.polling = 'starting';
  applyRights();
  return call(API + 'duplicates/scan', { json: body }).then(function (answer) {
    if (seq !== state.dups.seq) { return; }
    showMsg(byId('dups-msg'), '', null);
    d.polling = answer.data.job;
    showProgress(answer.data);
    d.timer = setTimeout(pollScan, DUPS_POLL_MS);
  }, function (err) {
    if (seq !== state.dups.seq) { return; }
    // 409 scan_running carries the namespace's running job (started elsewhere, or before a reload): follow it.
    var running = err.status === 409 && err.data && typeof err.data.job === 'string' ? err.data.job : null;
    if (running) {
      d.polling = running;
      showMsg(byId('dups-msg'), err.message, 'info');
      d.timer = setTimeout(pollScan, 0);
      return;
    }
    d.polling = null;
    showError(byId('dups-msg'), err);
    applyRights();
  });
}

function showProgress(scan) {
  var bar = byId('dups-bar');
  var total = Number(scan.records_total) || 0;
  var done = Number(scan.records_done) || 0;
  byId('dups-progress').hidden = false;
  if (scan.state === 'queued' || !total) {
    bar.removeAttribute('value'); // indeterminate until the scan knows its size
  } else {
    bar.max = total;
    bar.value = Math.min(done, total);
  }
  byId('dups-progress-text').textContent = scan.state === 'queued' ? t('dups.queued')
    : t('dups.running', { done: done.toLocaleString(), total: total.toLocaleString() });
}

function pollScan() {
  var d = state.dups;
  var seq = d.seq;
  var job = d.polling;
  d.timer = null;
  return call(API + 'duplicates/scan/' + encodeURIComponent(job) + namespaceQuery(), { method: 'GET' }).then(function (answer) {
    if (seq !== state.dups.seq) { return null; }
    var scan = answer.data || {};
    if (scan.state === 'done' || scan.state === 'failed') {
      d.polling = null;
      byId('dups-progress').hidden = true;
      if (scan.state === 'failed') {
        showMsg(byId('dups-msg'), t('dups.failed') + (scan.error && scan.error.msg ? scan.error.msg : ''), 'error');
        applyRights();
        return null;
      }
      return loadDups().then(function () {
        showMsg(byId('dups-msg'), t(scan.groups === 1 ? 'dups.done.one' : 'dups.done', { s: show(scan.seconds), groups: show(scan.groups) }), 'ok');
      });
    }
    showProgress(scan);
    d.timer = setTimeout(pollScan, DUPS_POLL_MS);
    return null;
  }, function (err) {
    if (seq !== state.dups.seq) { return; }
    d.polling = null;
    byId('dups-progress').hidden = true;
    showError(byId('dups-msg'), err);
    applyRights();
  });
}

function wireDups() {
  byId('dups-form').addEventListener('submit', startScan);
  byId('dups-more').addEventListener('click', function () { loadDups(true); });
  byId('dups-delete-chosen').addEventListener('click', deleteChosen);
}

// ---------------------------------------------------------------- catalog
var MODEL_ORDER = ['name', 'engine', 'precision', 'fingerprint', 'weights', 'dim', 'resize', 'pooling'];
var MILVUS_ORDER = ['target', 'server_version', 'vector_index', 'key_index'];

function show(value) {
  if (value === null || value === undefined || value === '') { return '—'; }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function fillKv(node, data, order) {
  node.textContent = '';
  data = data && typeof data === 'object' ? data : {};
  var names = order.filter(function (k) { return k in data; }).concat(Object.keys(data).filter(function (k) { return order.indexOf(k) < 0; }));
  names.forEach(function (name) { field(name, show(data[name]), 'ready-' + name).forEach(node.appendChild, node); });
  if (!names.length) { node.appendChild(el('dd', { text: '—' })); }
}

function batchingTable(batching) {
  var head = el('tr', {}, ['', t('batches'), t('requests'), t('mean batch'), t('busy s')].map(function (h) { return el('th', { scope: 'col', text: h }); }));
  var rows = Object.keys(batching || {}).map(function (name) {
    var s = batching[name] || {};
    var mean = s.batches ? (s.requests / s.batches).toFixed(2) : '—';
    return el('tr', { 'data-testid': 'batching-' + name }, [el('th', { scope: 'row', text: name }),
      el('td', { text: show(s.batches) }), el('td', { text: show(s.requests) }), el('td', { text: mean }), el('td', { text: show(s.busy_seconds) })]);
  });
  return el('table', { className: 'table' }, [el('thead', {}, [head]), el('tbody', {}, rows)]);
}

function renderReady(res, body) {
  var data = (body && body.data) || {};
  var status = byId('ready-status');
  status.textContent = res.ok ? t('Ready') : t('Not ready');
  status.className = 'stat-value stat-status ' + (res.ok ? 'ok' : 'bad');
  byId('ready-msg').textContent = body && body.msg ? body.msg : '';
  fillKv(byId('ready-model'), data.model, MODEL_ORDER);
  fillKv(byId('ready-milvus'), data.milvus, MILVUS_ORDER);
  var batching = byId('ready-batching');
  batching.textContent = '';
  batching.appendChild(batchingTable(data.batching));
}

function loadReady() {
  return fetch('/ready', { headers: authHeaders(), cache: 'no-store' }).then(function (res) {
    return res.text().then(function (text) {
      var body = null;
      try { body = JSON.parse(text); } catch (e) { body = { msg: text.slice(0, 500) }; }
      renderReady(res, body);
    });
  }, function (err) { renderReady({ ok: false }, { msg: t('unreachable') + ': ' + err.message }); });
}

function loadCatalog() {
  var msg = byId('catalog-msg');
  var ns = byId('namespace').value.trim();
  byId('count-ns').textContent = ns ? t('in namespace') + ' “' + ns + '”' : '';
  showMsg(msg, '', null);
  return Promise.all([
    call(API + 'count', { json: withNamespace({}) }).then(function (body) {
      byId('count-value').textContent = Number(body.data).toLocaleString();
      byId('count-chip').textContent = Number(body.data).toLocaleString();
    }, function (err) { byId('count-value').textContent = '?'; showError(msg, err); }),
    loadReady()
  ]);
}

// ---------------------------------------------------------------- start
function wire() {
  byId('login-form').addEventListener('submit', onLogin);
  byId('logout').addEventListener('click', function () { lock(''); });
  document.querySelectorAll('[role=tab]').forEach(function (tab) {
    tab.addEventListener('click', function () { showView(tab.getAttribute('data-view')); });
    tab.addEventListener('keydown', onTabKey);
  });
  byId('browse-form').addEventListener('submit', function (e) { e.preventDefault(); loadKey(byId('browse-key').value.trim()); });
  byId('browse-delete-key').addEventListener('click', deleteKey);
  byId('catalog-refresh').addEventListener('click', loadCatalog);
  byId('namespace').addEventListener('change', function () {
    try { sessionStorage.setItem(NS_KEY, byId('namespace').value.trim()); } catch (e) { /* optional */ }
    clearThumbs();
    refreshCount();
    resetDups(); // another namespace's groups (and its scan) are not this one's
    if (state.view === 'catalog') { loadCatalog(); }
    if (state.view === 'dups') { loadDups(); }
  });
  byId('lang').addEventListener('click', function () {
    lang = lang === 'zh' ? 'en' : 'zh';
    try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* optional */ }
    applyLang();
  });
  window.addEventListener('hashchange', function () { if (!byId('app').hidden) { showView(viewFromHash()); } });
  wireSearch();
  wireRegion();
  wireDups();
}

function start() {
  var saved = null;
  resetDups();
  try {
    lang = localStorage.getItem(LANG_KEY) || ((navigator.language || '').toLowerCase().indexOf('zh') === 0 ? 'zh' : 'en');
    saved = sessionStorage.getItem(TOKEN_KEY);
    byId('namespace').value = sessionStorage.getItem(NS_KEY) || '';
  } catch (e) { /* storage disabled: ask for the token on every load */ }
  wire();
  applyLang();
  onKindChange();
  if (saved === null) { lock(''); return; }
  state.token = saved;
  unlock();
}

document.addEventListener('DOMContentLoaded', start);
