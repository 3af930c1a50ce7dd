/* Starts Swagger UI on /docs. No inline script: the page's CSP allows only files served by imgsim. */
var TOKEN_KEY = 'imgsim.token'; // the console's session entry: one login serves both pages

function storedToken() {
  try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}

function tokenHeaders() {
  var token = storedToken();
  return token ? { token: token } : {};
}

// Try-it-out requests to this origin get the token header when Authorize was not used, so a user who
// logged in at /console can try calls at once. Never added to other origins, never to the URL.
function addToken(req) {
  var token = storedToken();
  var sameOrigin = new URL(req.url, window.location.href).origin === window.location.origin;
  var headers = req.headers || (req.headers = {});
  if (token && sameOrigin && !headers.token && !headers.Authorization) {
    headers.token = token;
  }
  return req;
}

// The document names http://localhost:7000 as its server; try-it-out must go to the origin this page came
// from instead (the only one the page's CSP lets it reach, and the only one the token may be sent to).
function thisServer(spec) {
  spec.servers = [{ url: window.location.origin, description: 'this server' }];
  return spec;
}

function forgetToken() {
  try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage disabled: nothing kept */ }
}

// A first visit (no token yet) gets the form and its help, not an error: asking is not a failure. Only a
// token the service refused is shown as an error, in the service's own words.
function showLogin(refusal, problem) {
  var form = document.getElementById('docs-login');
  var error = document.getElementById('docs-login-msg');
  error.textContent = refusal ? 'The token was refused: ' + refusal : (problem || '');
  error.hidden = !error.textContent;
  document.getElementById('docs-note').hidden = true;
  form.hidden = false;
  document.getElementById('docs-token').focus();
}

// The description itself may be behind the token: fetch it with the header, and ask for the token on 401.
function load() {
  var url = document.body.getAttribute('data-openapi-url');
  var sent = storedToken();
  fetch(url, { cache: 'no-store', headers: tokenHeaders() }).then(function (res) {
    return res.json().catch(function () { return {}; }).then(function (body) {
      if (res.status === 401) {
        if (sent) { forgetToken(); }
        showLogin(sent ? (body.msg || 'HTTP 401') : null);
        return;
      }
      if (!res.ok) { throw new Error(body.msg || url + ' answered HTTP ' + res.status); }
      document.getElementById('docs-login').hidden = true;
      document.getElementById('docs-note').hidden = false;
      render(thisServer(body));
    });
  }).catch(function (err) {
    document.getElementById('swagger-ui').textContent = 'Cannot load the API description: ' + err.message;
  });
}

function render(spec) {
  var ui = window.SwaggerUIBundle({
    spec: spec,
    dom_id: '#swagger-ui',
    layout: 'BaseLayout',
    deepLinking: true,
    tryItOutEnabled: false,
    persistAuthorization: false, // the token must not land in localStorage
    validatorUrl: null,          // the default validator is an external site
    requestInterceptor: addToken,
    onComplete: function () {
      var token = storedToken();
      if (token) { ui.preauthorizeApiKey('tokenHeader', token); }
    }
  });
  window.ui = ui;
}

function start() {
  document.getElementById('docs-login').addEventListener('submit', function (event) {
    event.preventDefault();
    var token = document.getElementById('docs-token').value.trim();
    if (!token) { showLogin('', 'Enter the token first.'); return; }
    try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* none */ }
    document.getElementById('docs-token').value = '';
    load();
  });
  load();
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', start);
} else {
  start();
}
