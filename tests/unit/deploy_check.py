#!/usr/bin/python3
"""Structural check of deploy/ (no cluster, no KVM): prints TAP, exits 1 on any failure.

  tests/unit/deploy_check.py [--top DIR]

- every YAML file parses, every document has apiVersion, kind and metadata.name;
  kustomization.yaml names only files that exist;
- the kilnd DaemonSet: /dev/kvm as a CharDevice hostPath mounted at /dev/kvm,
  liveness and readiness on /v1/health at the API port, the preStop drain,
  KILN_HOST_ID from spec.nodeName, no privileged container, a grace period;
  the headless Service and the router's Deployment and Service select those
  pods and use their ports; the router's --dns-a names the headless Service;
- the Nomad jobs parse (a strict HCL subset parser below: anything it does
  not know is an error): kilnd a system job on raw_exec with a service check
  on /v1/health, the router's template renders the file its --hosts-file reads;
- every --flag given to kilnd, kiln-router or kilnd-start exists in its
  --help (kilnd and kiln-router from build/; skipped when not built);
- deploy/bin scripts pass sh -n, and kilnd-start turns node names into valid
  host ids.
"""
import os
import re
import subprocess
import sys

import yaml

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if len(sys.argv) == 3 and sys.argv[1] == "--top":
    TOP = os.path.abspath(sys.argv[2])
elif len(sys.argv) != 1:
    sys.exit("usage: tests/unit/deploy_check.py [--top DIR]")
DEPLOY = os.path.join(TOP, "deploy")
LIBEXEC = "/usr/local/libexec/kiln/"

n_tests = 0
n_failed = 0


def tap(ok, desc, skip=None):
    global n_tests, n_failed
    n_tests += 1
    if skip:
        print("ok %d - deploy: %s # SKIP %s" % (n_tests, desc, skip))
        return True
    if not ok:
        n_failed += 1
    print("%s %d - deploy: %s" % ("ok" if ok else "not ok", n_tests, desc))
    return ok


def check(desc, fn):
    """Runs fn(); a falsy result or an exception (its message shown) fails."""
    try:
        res = fn()
        why = None if res else "false"
    except Exception as e:  # a missing key is a failed check, not a crash
        res, why = False, "%s: %s" % (type(e).__name__, e)
    tap(bool(res), desc + ("" if res else " (%s)" % why))
    return bool(res)


# --- a strict HCL subset ------------------------------------------------------------
class HclError(Exception):
    pass


class Hcl:
    """Parses blocks (TYPE "label"... { }), attributes (NAME = value), strings
    with ${...} kept as text, heredocs (<<EOT, <<-EOT), numbers, true/false,
    lists and # // /* */ comments. A body is a list of
    ("attr", name, value, line) and ("block", type, [labels], body, line)."""

    IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
    NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")

    def __init__(self, text, name="<hcl>"):
        self.s, self.i, self.name = text, 0, name

    def line(self):
        return self.s.count("\n", 0, self.i) + 1

    def fail(self, msg):
        raise HclError("%s:%d: %s" % (self.name, self.line(), msg))

    def skip(self, newlines=True):
        """Skips blanks and comments; stops at a newline unless newlines."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#" or s.startswith("//", self.i):
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    self.fail("unterminated /* comment")
                self.i = end + 2
            else:
                break

    def parse(self):
        body = self.body(top=True)
        return body

    def body(self, top=False):
        items, seen = [], set()
        while True:
            self.skip()
            if self.i >= len(self.s):
                if not top:
                    self.fail("missing '}' at the end of the file")
                return items
            if self.s[self.i] == "}":
                if top:
                    self.fail("unexpected '}'")
                self.i += 1
                return items
            line = self.line()
            m = self.IDENT.match(self.s, self.i)
            if not m:
                self.fail("expected an attribute or a block, found %r" % self.s[self.i:self.i + 10])
            name = m.group(0)
            self.i = m.end()
            self.skip(newlines=False)
            if self.s.startswith("=", self.i) and not self.s.startswith("==", self.i):
                self.i += 1
                if name in seen:
                    self.fail("attribute %s set twice" % name)
                seen.add(name)
                value = self.value()
                self.skip(newlines=False)
                if self.i < len(self.s) and self.s[self.i] not in "\n}":
                    self.fail("expected the end of the line after %s = ..." % name)
                items.append(("attr", name, value, line))
                continue
            labels = []
            while self.i < len(self.s) and self.s[self.i] == '"':
                labels.append(self.string())
                self.skip(newlines=False)
            if not self.s.startswith("{", self.i):
                self.fail("expected '=' or '{' after %s" % name)
            self.i += 1
            items.append(("block", name, labels, self.body(), line))

    def value(self):
        self.skip(newlines=False)
        s = self.s
        if self.i >= len(s):
            self.fail("missing value")
        c = s[self.i]
        if c == '"':
            return self.string()
        if s.startswith("<<", self.i):
            return self.heredoc()
        if c == "[":
            self.i += 1
            out = []
            while True:
                self.skip()
                if s.startswith("]", self.i):
                    self.i += 1
                    return out
                out.append(self.value())
                self.skip()
                if s.startswith(",", self.i):
                    self.i += 1
                elif not s.startswith("]", self.i):
                    self.fail("expected ',' or ']' in a list")
        m = self.NUMBER.match(s, self.i)
        if m:
            self.i = m.end()
            return float(m.group(0)) if m.group(1) else int(m.group(0))
        m = self.IDENT.match(s, self.i)
        if m and m.group(0) in ("true", "false"):
            self.i = m.end()
            return m.group(0) == "true"
        self.fail("unsupported value starting %r" % s[self.i:self.i + 10])

    def string(self):
        s, out = self.s, []
        self.i += 1
        while True:
            if self.i >= len(s) or s[self.i] == "\n":
                self.fail("unterminated string")
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\":
                esc = s[self.i + 1:self.i + 2]
                if esc not in ('"', "\\", "n", "t"):
                    self.fail("unsupported escape \\%s" % esc)
                out.append({"n": "\n", "t": "\t"}.get(esc, esc))
                self.i += 2
            elif s.startswith("${", self.i) or s.startswith("%{", self.i):
                end = s.find("}", self.i)
                if end < 0 or "\n" in s[self.i:end]:
                    self.fail("unterminated ${...}")
                out.append(s[self.i:end + 1])
                self.i = end + 1
            else:
                out.append(c)
                self.i += 1

    def heredoc(self):
        m = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n").match(self.s, self.i)
        if not m:
            self.fail("bad heredoc opening")
        strip, tag = m.group(1) == "-", m.group(2)
        start = m.end()
        end_re = re.compile(r"^[ \t]*" + tag + r"[ \t]*$", re.M)
        e = end_re.search(self.s, start)
        if not e:
            self.fail("heredoc %s never ends" % tag)
        lines = self.s[start:e.start()].split("\n")[:-1]
        self.i = e.end()
        if strip:
            indents = [len(l) - len(l.lstrip(" \t")) for l in lines if l.strip()]
            cut = min(indents) if indents else 0
            lines = [l[cut:] for l in lines]
        return "".join(l + "\n" for l in lines)


def hcl_blocks(body, kind):
    return [it for it in body if it[0] == "block" and it[1] == kind]


def hcl_block(body, kind):
    found = hcl_blocks(body, kind)
    if len(found) != 1:
        raise KeyError("%d %s blocks, want 1" % (len(found), kind))
    return found[0]


def hcl_attr(body, name):
    for it in body:
        if it[0] == "attr" and it[1] == name:
            return it[2]
    raise KeyError("no attribute %s" % name)


# --- flags ------------------------------------------------------------------------
def help_flags(argv):
    """The --flags a program's --help names, or None when it cannot run."""
    if not os.access(argv[0], os.X_OK) and argv[0] != "/bin/sh":
        return None
    try:
        p = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return set(re.findall(r"--[a-z][a-z0-9-]*", p.stdout + p.stderr))


def used_flags(args):
    return [a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("--") and a != "--"]


# kilnd's flags for a fleet (issue 16), written against before kilnd has them:
# while a built kilnd has none of them, their use is a SKIP, not a failure.
FLEET_FLAGS = {"--host-id", "--max-cpus", "--max-memory-mib"}


def flags_check(desc, args, known, prog):
    if known is None:
        tap(True, desc, skip="%s is not built" % prog)
        return
    bad = [f for f in used_flags(args) if f not in known]
    if prog == "build/kilnd" and bad and set(bad) <= FLEET_FLAGS and not (known & FLEET_FLAGS):
        tap(True, desc, skip="this kilnd has no %s yet (issue 16)" % ", ".join(bad))
        return
    tap(not bad, desc + (" (unknown: %s)" % ", ".join(bad) if bad else ""))


# --- YAML ---------------------------------------------------------------------------
def yaml_files():
    out = []
    for d, _, files in os.walk(DEPLOY):
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return sorted(out)


def main():
    kilnd_flags = help_flags([os.path.join(TOP, "build", "kilnd")])
    router_flags = help_flags([os.path.join(TOP, "build", "kiln-router")])
    start_flags = help_flags(["/bin/sh", os.path.join(DEPLOY, "bin", "kilnd-start")])

    # Every YAML document: parses, has its identity.
    docs = {}  # (kind, name) -> (file, doc), kustomize patches apart
    patches = set()
    kdir = os.path.join(DEPLOY, "kubernetes")
    kust = None
    files = yaml_files()
    tap(len(files) >= 5, "deploy/ holds the Kubernetes YAML files (%d)" % len(files))
    for path in files:
        rel = os.path.relpath(path, TOP)
        try:
            with open(path) as f:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            tap(False, "%s parses (%s)" % (rel, str(e).replace("\n", " ")))
            continue
        ok = bool(loaded)
        for d in loaded:
            if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
                ok = False
                continue
            if d["kind"] == "Kustomization":
                kust = (path, d)
                continue
            name = (d.get("metadata") or {}).get("name")
            if not isinstance(name, str) or not name:
                ok = False
                continue
            if path.endswith(".patch.yaml"):
                patches.add(os.path.basename(path))
            else:
                docs[(d["kind"], name)] = (path, d)
        tap(ok, "%s parses, every document has apiVersion, kind and metadata.name" % rel)

    def kustom():
        p, k = kust
        listed = list(k.get("resources", [])) + [x["path"] for x in k.get("patches", [])]
        missing = [x for x in listed if not os.path.isfile(os.path.join(os.path.dirname(p), x))]
        if missing:
            raise FileNotFoundError(", ".join(missing))
        pk = [x["path"] for x in k.get("patches", [])]
        if sum(x in ("kvm-device.patch.yaml", "privileged.patch.yaml") for x in pk) != 1:
            raise ValueError("exactly one of kvm-device/privileged patches must be on")
        return k.get("namespace") and any(i.get("name") == "kiln" for i in k.get("images", []))

    check("kustomization.yaml: its files exist, a namespace, the kiln image, one /dev/kvm patch", kustom)

    def get(kind, name):
        if (kind, name) not in docs:
            raise KeyError("no %s %s" % (kind, name))
        return docs[(kind, name)][1]

    ds = lambda: get("DaemonSet", "kilnd")
    pod = lambda: ds()["spec"]["template"]["spec"]
    ctr = lambda: pod()["containers"][0]

    def port_of(c, ref):
        for p in c.get("ports", []):
            if ref in (p.get("name"), p.get("containerPort")):
                return p["containerPort"]
        raise KeyError("no container port %r" % ref)

    def kvm():
        vols = {v["name"]: v for v in pod()["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in ctr()["volumeMounts"]}
        hp = vols[mounts["/dev/kvm"]]["hostPath"]
        return hp == {"path": "/dev/kvm", "type": "CharDevice"}

    check("DaemonSet kilnd: /dev/kvm is a CharDevice hostPath mounted at /dev/kvm", kvm)

    def probes():
        c = ctr()
        api = port_of(c, "api")
        for kind in ("livenessProbe", "readinessProbe"):
            g = c[kind]["httpGet"]
            if g["path"] != "/v1/health" or port_of(c, g["port"]) != api:
                raise ValueError("%s is not GET /v1/health on the API port" % kind)
        return api == int(ctr()["args"][ctr()["args"].index("--listen") + 1].rsplit(":", 1)[1])

    check("DaemonSet kilnd: liveness and readiness on /v1/health at the port kilnd listens on", probes)

    def lifecycle():
        c = ctr()
        cmd = c["lifecycle"]["preStop"]["exec"]["command"]
        grace = pod()["terminationGracePeriodSeconds"]
        return cmd[0] == LIBEXEC + "kilnd-drain" and "--wait" in cmd and grace >= 600

    check("DaemonSet kilnd: preStop runs kilnd-drain --wait, grace period >= 600 s", lifecycle)

    def identity():
        env = {e["name"]: e for e in ctr()["env"]}
        ref = env["KILN_HOST_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        tok = env["KILN_TOKEN_FILE"]["value"]
        mounts = [m["mountPath"] for m in ctr()["volumeMounts"]]
        return ref == "spec.nodeName" and any(tok.startswith(m + "/") for m in mounts)

    check("DaemonSet kilnd: KILN_HOST_ID from spec.nodeName, the admin token from a mounted file", identity)

    def privileges():
        sc = ctr()["securityContext"]
        caps = sc["capabilities"]
        return (not pod().get("hostNetwork") and sc.get("privileged") is False and
                caps["drop"] == ["ALL"] and "SYS_ADMIN" in caps["add"] and
                pod().get("nodeSelector"))

    check("DaemonSet kilnd: not privileged, capabilities dropped but a listed few, no hostNetwork, a node selector",
          privileges)

    def start_cmd():
        cmd = ctr()["command"]
        return cmd[0] == LIBEXEC + "kilnd-start" and cmd[-1] == "--"

    check("DaemonSet kilnd: started through kilnd-start ... --", start_cmd)
    try:
        flags_check("DaemonSet kilnd: its args are kilnd flags", ctr()["args"], kilnd_flags, "build/kilnd")
        flags_check("DaemonSet kilnd: its kilnd-start flags exist", ctr()["command"][1:], start_flags,
                    "kilnd-start")
    except Exception as e:
        tap(False, "DaemonSet kilnd: args readable (%s)" % e)

    def images():
        bad = []
        for (kind, name), (_, d) in docs.items():
            if kind in ("DaemonSet", "Deployment"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    if c["image"] != "kiln:VERSION":
                        bad.append("%s/%s" % (kind, name))
        if bad:
            raise ValueError("not kiln:VERSION: " + ", ".join(bad))
        return True

    check("every container's image is the kiln:VERSION placeholder", images)

    def headless():
        s = get("Service", "kilnd")["spec"]
        labels = ds()["spec"]["template"]["metadata"]["labels"]
        sel_ok = all(labels.get(k) == v for k, v in s["selector"].items())
        tp = s["ports"][0]["targetPort"]
        return (s["clusterIP"] == "None" and s.get("publishNotReadyAddresses") is True and sel_ok and
                port_of(ctr(), tp) == port_of(ctr(), "api"))

    check("Service kilnd: headless, keeps draining pods, selects the DaemonSet's pods and its API port",
          headless)

    dep = lambda: get("Deployment", "kiln-router")
    rctr = lambda: dep()["spec"]["template"]["spec"]["containers"][0]

    def router():
        d = dep()
        args = rctr()["args"]
        name, port = args[args.index("--dns-a") + 1].rsplit(":", 1)
        svc = get("Service", name)["spec"]
        return (d["spec"]["replicas"] >= 2 and svc["clusterIP"] == "None" and
                int(port) == svc["ports"][0]["port"] and rctr()["command"][0] == LIBEXEC + "kiln-router")

    check("Deployment kiln-router: >= 2 replicas, --dns-a names the headless Service and its port", router)

    def router_sc():
        sc = rctr()["securityContext"]
        return sc["runAsNonRoot"] and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]

    check("Deployment kiln-router: non-root, no privilege escalation, no capabilities", router_sc)

    def router_svc():
        s = get("Service", "kiln-router")["spec"]
        labels = dep()["spec"]["template"]["metadata"]["labels"]
        return (all(labels.get(k) == v for k, v in s["selector"].items()) and
                port_of(rctr(), s["ports"][0]["targetPort"]))

    check("Service kiln-router: selects the router's pods and its port", router_svc)
    try:
        flags_check("Deployment kiln-router: its args are kiln-router flags", rctr()["args"], router_flags,
                    "build/kiln-router")
    except Exception as e:
        tap(False, "Deployment kiln-router: args readable (%s)" % e)

    # --- Nomad ----------------------------------------------------------------------
    nomad = {}
    ndir = os.path.join(DEPLOY, "nomad")
    hcls = sorted(f for f in os.listdir(ndir) if f.endswith(".hcl")) if os.path.isdir(ndir) else []
    tap(len(hcls) == 2, "deploy/nomad holds two job files (%s)" % ", ".join(hcls))
    for f in hcls:
        try:
            with open(os.path.join(ndir, f)) as fh:
                body = Hcl(fh.read(), f).parse()
            jobs = hcl_blocks(body, "job")
            if len(jobs) != 1 or len(body) != 1 or len(jobs[0][2]) != 1:
                raise HclError("%s: want exactly one job \"NAME\" { } and nothing else" % f)
            nomad[jobs[0][2][0]] = jobs[0][3]
            tap(True, "deploy/nomad/%s parses (job %s)" % (f, jobs[0][2][0]))
        except (HclError, OSError) as e:
            tap(False, "deploy/nomad/%s parses (%s)" % (f, e))

    def njob(name):
        if name not in nomad:
            raise KeyError("no job %s" % name)
        return nomad[name]

    def ktask():
        g = hcl_block(njob("kilnd"), "group")[3]
        return g, hcl_block(g, "task")[3]

    def nomad_kilnd():
        g, t = ktask()
        svc = hcl_block(g, "service")[3]
        chk = hcl_block(svc, "check")[3]
        meta = hcl_block(svc, "meta")[3]
        args = hcl_attr(hcl_block(t, "config")[3], "args")
        return (hcl_attr(njob("kilnd"), "type") == "system" and hcl_attr(t, "driver") == "raw_exec" and
                hcl_attr(chk, "type") == "http" and hcl_attr(chk, "path") == "/v1/health" and
                hcl_attr(meta, "host_id") == args[args.index("--host-id") + 1])

    check("Nomad kilnd: a system job on raw_exec, service check GET /v1/health, host_id meta = --host-id",
          nomad_kilnd)

    def nomad_kilnd_cmd():
        _, t = ktask()
        cfg = hcl_block(t, "config")[3]
        return hcl_attr(cfg, "command") == LIBEXEC + "kilnd-start" and "--" in hcl_attr(cfg, "args")

    if check("Nomad kilnd: started through kilnd-start ... --", nomad_kilnd_cmd):
        args = hcl_attr(hcl_block(ktask()[1], "config")[3], "args")
        cut = args.index("--")
        flags_check("Nomad kilnd: its args are kilnd flags", args[cut + 1:], kilnd_flags, "build/kilnd")
        flags_check("Nomad kilnd: its kilnd-start flags exist", args[:cut], start_flags, "kilnd-start")

    def rtask():
        g = hcl_block(njob("kiln-router"), "group")[3]
        return g, hcl_block(g, "task")[3]

    def nomad_router():
        g, t = rtask()
        args = hcl_attr(hcl_block(t, "config")[3], "args")
        want = args[args.index("--hosts-file") + 1].replace("${NOMAD_TASK_DIR}", "local")
        for _, _, _, tb, _ in hcl_blocks(t, "template"):
            if hcl_attr(tb, "destination") == want:
                data = hcl_attr(tb, "data")
                return (hcl_attr(tb, "change_mode") == "noop" and
                        re.search(r'\{\{\s*range\s+service\s+"kilnd"\s*\}\}', data) and
                        "ServiceMeta" in data and hcl_attr(njob("kiln-router"), "type") == "service")
        raise KeyError("no template renders %s" % want)

    check("Nomad kiln-router: a service job, its template renders --hosts-file from service \"kilnd\" (noop)",
          nomad_router)
    try:
        flags_check("Nomad kiln-router: its args are kiln-router flags",
                    hcl_attr(hcl_block(rtask()[1], "config")[3], "args"), router_flags, "build/kiln-router")
    except Exception as e:
        tap(False, "Nomad kiln-router: args readable (%s)" % e)

    # --- the HCL parser refuses what it does not know -------------------------------
    bad = {
        "an unterminated string": 'a = "x\n',
        "a missing brace": 'job "x" {\n a = 1\n',
        "a stray brace": "a = 1\n}\n",
        "an expression": "a = 1 + 2\n",
        "an unended heredoc": "a = <<EOT\nx\n",
        "an attribute set twice": "a = 1\na = 2\n",
        "a map value": "a = { b = 1 }\n",
        "a bad escape": 'a = "\\q"\n',
    }
    refused = []
    for what, text in bad.items():
        try:
            Hcl(text).parse()
        except HclError:
            refused.append(what)
    tap(len(refused) == len(bad), "the HCL parser refuses %d broken inputs (%s)" % (
        len(bad), ", ".join(sorted(set(bad) - set(refused))) or "all refused"))
    try:
        good = Hcl('# c\njob "j" { // c\n  /* c */ x = ["a", 1, true,]\n  d = <<-E\n    l1\n      l2\n    E\n}\n').parse()
        body = good[0][3]
        ok = hcl_attr(body, "x") == ["a", 1, True] and hcl_attr(body, "d") == "l1\n  l2\n"
    except HclError:
        ok = False
    tap(ok, "the HCL parser reads comments, lists and indented heredocs")

    # --- deploy/bin ---------------------------------------------------------------
    scripts = sorted(os.listdir(os.path.join(DEPLOY, "bin")))
    for s in scripts:
        p = os.path.join(DEPLOY, "bin", s)
        r = subprocess.run(["sh", "-n", p], capture_output=True, text=True)
        tap(r.returncode == 0 and os.access(p, os.X_OK), "deploy/bin/%s: executable, sh -n" % s)
    cases = {
        "kvm-01": "kvm-01",
        "ip-10-0-1-23.ec2.internal": "ip-10-0-1-23-ec2-internal",
        "Node_A.Example.COM": "node-a-example-com",
        "-x-": "x",
        "n" * 60: "n" * 31 + "-",  # then 8 hex digits
    }
    bad_ids = []
    for node, want in cases.items():
        r = subprocess.run(["sh", os.path.join(DEPLOY, "bin", "kilnd-start"), "--print-host-id"],
                           capture_output=True, text=True, env=dict(os.environ, KILN_HOST_ID=node))
        got = r.stdout.strip()
        if (r.returncode != 0 or not got.startswith(want) or
                not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", got)):
            bad_ids.append("%s -> %r" % (node, got))
    r = subprocess.run(["sh", os.path.join(DEPLOY, "bin", "kilnd-start"), "--print-host-id"],
                       capture_output=True, text=True, env=dict(os.environ, KILN_HOST_ID="..."))
    if r.returncode == 0:
        bad_ids.append("'...' accepted")
    tap(not bad_ids, "kilnd-start: node names become host ids [a-z0-9][a-z0-9-]{0,39}%s" % (
        " (%s)" % "; ".join(bad_ids) if bad_ids else ""))

    print("1..%d" % n_tests)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
