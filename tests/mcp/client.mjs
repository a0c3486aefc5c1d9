// kiln-mcp against a client we did not write: the official TypeScript SDK's
// Client (@modelcontextprotocol/sdk, installed into build/mcp-client by
// scripts/install-deps), over stdio and over streamable HTTP, with a real kilnd.
// Prints TAP lines ("ok - ..." / "not ok - ..."); exits 1 if any failed.
//
// Environment (tests/integration/t-mcp.sh sets it):
//   MCP_CLIENT_DIR   the folder whose node_modules holds @modelcontextprotocol/sdk
//   KILN_MCP_PY      the Python that runs `-m kiln.mcp` (PYTHONPATH finds the SDK)
//   KILN_MCP_ARGS    kiln-mcp's arguments for the stdio server (space separated)
//   KILN_MCP_URL     the HTTP server's endpoint; KILN_MCP_PID its pid (SIGTERMed at the end)
//   KILN_HOST (unix:/PATH), KILN_TOKEN   kilnd, to check what is left behind
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.env.MCP_CLIENT_DIR;
const sdk = (p) => import(pathToFileURL(path.join(dir, 'node_modules/@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StdioClientTransport } = await sdk('client/stdio.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const Ajv = (await import(pathToFileURL(path.join(dir, 'node_modules/ajv/dist/ajv.js')).href)).default;

let failed = 0, passed = 0;
const ok = (desc) => { passed++; console.log(`ok - ${desc}`); };
const notOk = (desc, why) => { failed++; console.log(`not ok - ${desc}${why ? ` (${String(why).slice(0, 400).replace(/\n/g, '\\n')})` : ''}`); };
const check = (desc, cond, why) => (cond ? ok(desc) : notOk(desc, why));
const note = (s) => console.log(`# ${String(s).replace(/\n/g, '\n# ')}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// step: one test step; an exception is a failure of that step, the others go on.
async function step(desc, fn) {
  try { await fn(); } catch (e) { notOk(desc, e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e); }
}

const LONG = { timeout: 300000 };  // tool calls that boot a VM under emulation
const text = (r) => (r.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
const call = (c, name, args, opts) => c.callTool({ name, arguments: args }, undefined, opts || LONG);

// kilnd's own view: the ids of the tenant's sandboxes.
function kilnd(method, p) {
  const host = process.env.KILN_HOST || '';
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: host.replace(/^unix:/, ''), path: p, method,
      headers: { Authorization: `Bearer ${process.env.KILN_TOKEN}` }, timeout: 30000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('kilnd did not answer in 30 s')));
    req.on('error', reject);
    req.end();
  });
}
async function sandboxIds() {
  const r = await kilnd('GET', '/v1/sandboxes');
  if (r.status !== 200) throw new Error(`GET /v1/sandboxes: ${r.status} ${r.body}`);
  return JSON.parse(r.body).sandboxes.map((s) => s.id);
}
// Waits (at most 90 s) until none of ids is among kilnd's sandboxes; returns those still there.
async function goneFromKilnd(ids) {
  let left = ids;
  for (let i = 0; i < 180; i++) {
    const now = await sandboxIds();
    left = ids.filter((id) => now.includes(id));
    if (left.length === 0) break;
    await sleep(500);
  }
  return left;
}
const sbId = (t) => (t.match(/\bsb-(?:[a-z0-9][a-z0-9-]*-)?[0-9a-f]{32}\b/) || [])[0];

const TOOLS = ['sandbox_create', 'sandbox_list', 'sandbox_kill', 'run_command', 'process_output',
  'send_stdin', 'kill_process', 'read_file', 'write_file', 'list_files', 'run_code'];

// ---------------------------------------------------------------- stdio
note('stdio transport');
const env = {};
for (const k of ['PATH', 'HOME', 'PYTHONPATH', 'KILN_HOST', 'KILN_TOKEN', 'PYTHONDONTWRITEBYTECODE']) {
  if (process.env[k] !== undefined) env[k] = process.env[k];
}
const stdioT = new StdioClientTransport({
  command: process.env.KILN_MCP_PY || 'python3',
  args: ['-m', 'kiln.mcp', ...(process.env.KILN_MCP_ARGS || '').split(' ').filter(Boolean)],
  env, stderr: 'inherit',
});
const a = new Client({ name: 'kiln-t-mcp', version: '1.0.0' });
let sid = null;
await step('stdio: initialize', async () => {
  await a.connect(stdioT);
  const v = a.getServerVersion();
  check('stdio: initialize (server kiln-mcp, tools capability)', v && v.name === 'kiln-mcp' && a.getServerCapabilities().tools,
    JSON.stringify(v));
});

await step('stdio: tools/list', async () => {
  const { tools } = await a.listTools();
  const names = tools.map((t) => t.name).sort();
  check('stdio: tools/list names the 11 tools', JSON.stringify(names) === JSON.stringify([...TOOLS].sort()), names.join(','));
  const ajv = new Ajv({ strict: true });
  const bad = [];
  for (const t of tools) {
    const s = t.inputSchema;
    if (!s || s.type !== 'object' || typeof s.properties !== 'object' || !t.description) { bad.push(t.name); continue; }
    try { ajv.compile(s); } catch (e) { bad.push(`${t.name}: ${e.message}`); }
  }
  check('stdio: every inputSchema is an object schema that ajv compiles (strict)', bad.length === 0, bad.join('; '));
  const rc = tools.find((t) => t.name === 'run_command');
  check('stdio: run_command takes sandbox, command, cwd, env, timeout_s, background',
    ['sandbox', 'command', 'cwd', 'env', 'timeout_s', 'background'].every((k) => k in rc.inputSchema.properties)
    && rc.inputSchema.required.includes('sandbox') && rc.inputSchema.required.includes('command'));
});

await step('stdio: sandbox_create', async () => {
  const r = await call(a, 'sandbox_create', { image: 'tiny' });
  sid = sbId(text(r));
  check('stdio: sandbox_create gives a sandbox id', !r.isError && sid, text(r));
});

await step('stdio: run_command keeps state between calls', async () => {
  const w = await call(a, 'run_command', { sandbox: sid, command: 'echo kept-across-calls > /root/state.txt && echo written' });
  check('stdio: run_command writes a file (exit code 0)', !w.isError && /exit code: 0/.test(text(w)) && /written/.test(text(w)), text(w));
  const r = await call(a, 'run_command', { sandbox: sid, command: 'cat state.txt', cwd: '/root' });
  check('stdio: a second run_command in the same sandbox reads it back', !r.isError && /kept-across-calls/.test(text(r)), text(r));
});

await step('stdio: run_command output', async () => {
  const r = await call(a, 'run_command', { sandbox: sid, command: 'echo "out $GREETING"; echo oops >&2; exit 3', env: { GREETING: 'hi' } });
  const t = text(r);
  check('stdio: stdout, stderr, env and a non-zero exit code are reported', !r.isError && /exit code: 3/.test(t)
    && /--- stdout ---\nout hi/.test(t) && /--- stderr ---\noops/.test(t), t);
  const big = await call(a, 'run_command', { sandbox: sid, command: 'yes 0123456789abcdef | head -c 400000; echo; echo THE-END' });
  const bt = text(big);
  check('stdio: 400 kB of output is cut to the cap with a note, keeping the tail', !big.isError && bt.length < 70000
    && /bytes of stdout left out/.test(bt) && /THE-END/.test(bt), `${bt.length} chars: ${bt.slice(-300)}`);
  const bin = await call(a, 'run_command', { sandbox: sid, command: "printf 'ok\\377\\376\\n'" });
  check('stdio: non-UTF-8 output is shown with a note', !bin.isError && /not valid UTF-8/.test(text(bin)) && /ok\uFFFD/.test(text(bin)), text(bin));
});

await step('stdio: background process', async () => {
  const r = await call(a, 'run_command', { sandbox: sid, command: 'read line; echo "got:$line"', background: true });
  const pid = Number((text(r).match(/pid (\d+)/) || [])[1]);
  check('stdio: run_command background=true gives a pid', !r.isError && pid > 0, text(r));
  const s = await call(a, 'send_stdin', { sandbox: sid, pid, data: 'hello\n', eof: true });
  check('stdio: send_stdin', !s.isError, text(s));
  const o = await call(a, 'process_output', { sandbox: sid, pid, after_seq: 0, wait_s: 30 });
  check('stdio: process_output has its output and its end', !o.isError && /got:hello/.test(text(o)) && /exit code: 0/.test(text(o))
    && /next after_seq: \d+/.test(text(o)), text(o));
  const k = await call(a, 'run_command', { sandbox: sid, command: 'sleep 1000', background: true });
  const kpid = Number((text(k).match(/pid (\d+)/) || [])[1]);
  const kr = await call(a, 'kill_process', { sandbox: sid, pid: kpid, signal: 'TERM' });
  const ko = await call(a, 'process_output', { sandbox: sid, pid: kpid, wait_s: 30 });
  check('stdio: kill_process ends a background process', !kr.isError && /killed by signal 15/.test(text(ko)), `${text(kr)} / ${text(ko)}`);
});

await step('stdio: files', async () => {
  const w = await call(a, 'write_file', { sandbox: sid, path: '/root/dir/a.txt', content: 'h\u00e9llo files\n' });
  const r = await call(a, 'read_file', { sandbox: sid, path: '/root/dir/a.txt' });
  check('stdio: write_file then read_file round-trips UTF-8 text', !w.isError && !r.isError && text(r) === 'h\u00e9llo files\n', `${text(w)} / ${text(r)}`);
  const l = await call(a, 'list_files', { sandbox: sid, path: '/root/dir' });
  check('stdio: list_files shows it', !l.isError && /a\.txt/.test(text(l)), text(l));
  const m = await call(a, 'read_file', { sandbox: sid, path: '/root/no/such/file' });
  check('stdio: read_file of a missing file is an isError result', m.isError === true && /not found/i.test(text(m)), text(m));
});

await step('stdio: bad input', async () => {
  const r = await call(a, 'run_command', { sandbox: 'sb-00000000000000000000000000000000', command: 'true' });
  check('stdio: a bad sandbox id is an isError result', r.isError === true && /no sandbox/.test(text(r)), text(r));
  const t = await call(a, 'run_command', { sandbox: sid, command: 42 });
  check('stdio: a wrong argument type is an isError result', t.isError === true && /command must be of type string/.test(text(t)), text(t));
  const m = await call(a, 'write_file', { sandbox: sid, path: '/root/x' });
  check('stdio: a missing argument is an isError result', m.isError === true && /'content' is required/.test(text(m)), text(m));
  let err = null;
  try { await call(a, 'no_such_tool', {}); } catch (e) { err = e; }
  check('stdio: an unknown tool is a JSON-RPC error -32602', err && err.code === -32602, err);
});

await step('stdio: run_code python', async () => {
  const before = await sandboxIds();
  const r = await call(a, 'run_code', { language: 'python', code: 'import sys\nprint(6 * 7)\nprint("to stderr", file=sys.stderr)\n' });
  const t = text(r);
  check('stdio: run_code python prints 42 (exit code 0)', !r.isError && /--- stdout ---\n42\n/.test(t) && /to stderr/.test(t) && /exit code: 0/.test(t), t);
  const after = await sandboxIds();
  check('stdio: run_code destroyed its sandbox', after.length === before.length && after.every((id) => before.includes(id)),
    `before ${before} after ${after}`);
});

await step('stdio: close', async () => {
  const ids = await sandboxIds();
  check('stdio: kilnd runs the session\'s sandbox before the close', sid && ids.includes(sid), ids.join(','));
  await a.close();
  const left = await goneFromKilnd([sid]);
  check('stdio: the session\'s sandbox is gone after the client closed stdin', left.length === 0, `left: ${left}`);
});

// ---------------------------------------------------------------- streamable HTTP
note('streamable HTTP transport');
const url = new URL(process.env.KILN_MCP_URL);
const h1T = new StreamableHTTPClientTransport(url);
const h1 = new Client({ name: 'kiln-t-mcp-http', version: '1.0.0' });
let hsid = null;
await step('http: initialize', async () => {
  await h1.connect(h1T);
  check('http: initialize gives an Mcp-Session-Id', typeof h1T.sessionId === 'string' && h1T.sessionId.length >= 16, h1T.sessionId);
  check('http: the negotiated protocol version is the client\'s own latest', h1T.protocolVersion === '2025-11-25', h1T.protocolVersion);
  const { tools } = await h1.listTools();
  check('http: tools/list', tools.length === TOOLS.length, tools.length);
});

await step('http: run_code bash', async () => {
  const r = await call(h1, 'run_code', { language: 'bash', code: 'set -e\nx=$((6 * 7))\necho "from bash $x"\nexit 5\n' });
  check('http: run_code bash (its output and exit code)', !r.isError && /from bash 42/.test(text(r)) && /exit code: 5/.test(text(r)), text(r));
});

await step('http: sandbox per session', async () => {
  const r = await call(h1, 'sandbox_create', { image: 'tiny' });
  hsid = sbId(text(r));
  check('http: sandbox_create', !r.isError && hsid, text(r));
  const u = await call(h1, 'run_command', { sandbox: hsid, command: 'uname -s' });
  check('http: run_command', !u.isError && /Linux/.test(text(u)), text(u));
  const l = await call(h1, 'sandbox_list', {});
  check('http: sandbox_list shows it running', !l.isError && l.content[0].text.includes(hsid) && /running/.test(text(l)), text(l));

  // Another session cannot see or use it.
  const h2 = new Client({ name: 'kiln-t-mcp-other', version: '1.0.0' });
  const h2T = new StreamableHTTPClientTransport(url);
  await h2.connect(h2T);
  check('http: a second session gets its own session id', h2T.sessionId && h2T.sessionId !== h1T.sessionId);
  const o = await call(h2, 'run_command', { sandbox: hsid, command: 'true' });
  check('http: another session\'s sandbox is "no sandbox" there', o.isError === true && /no sandbox/.test(text(o)), text(o));
  const ol = await call(h2, 'sandbox_list', {});
  check('http: sandbox_list of another session does not list it', !text(ol).includes(hsid), text(ol));
  await h2T.terminateSession();
  await h2.close();
});

await step('http: DELETE ends the session', async () => {
  const old = h1T.sessionId;
  await h1T.terminateSession();
  const left = await goneFromKilnd([hsid]);
  check('http: the session\'s sandbox is gone after DELETE', left.length === 0, `left: ${left}`);
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'Mcp-Session-Id': old },
    body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'ping' }) });
  check('http: the ended session is 404', res.status === 404, res.status);
  await h1.close();
});

let killed = false;
await step('http: server shutdown', async () => {
  const h3 = new Client({ name: 'kiln-t-mcp-shutdown', version: '1.0.0' });
  const h3T = new StreamableHTTPClientTransport(url);
  await h3.connect(h3T);
  const r = await call(h3, 'sandbox_create', { image: 'tiny' });
  const id = sbId(text(r));
  check('http: a sandbox of a session that is never ended', !r.isError && id, text(r));
  await h3.close();  // closes the transport only: the session lives on in the server
  const still = await sandboxIds();
  check('http: it outlives the client\'s transport', still.includes(id), still.join(','));
  process.kill(Number(process.env.KILN_MCP_PID), 'SIGTERM');
  killed = true;
  const left = await goneFromKilnd([id]);
  check('http: SIGTERM to kiln-mcp destroys every session\'s sandboxes', left.length === 0, `left: ${left}`);
});
// Whatever failed above, the HTTP server is told to stop (t-mcp.sh checks it ends).
if (!killed) { try { process.kill(Number(process.env.KILN_MCP_PID), 'SIGTERM'); } catch { /* gone */ } }

note(`client.mjs: ${passed} ok, ${failed} not ok`);
process.exit(failed ? 1 : 0);
