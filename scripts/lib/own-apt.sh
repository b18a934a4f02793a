# shellcheck shell=bash
# Sourced by scripts/build-kube and scripts/fetch-etcd: Debian packages and sources read through an apt
# configuration of our own, never through /etc/apt (which is read, never changed).
#
#   own_apt DIR SUITE   writes DIR/sources.list naming SUITE's main (deb and deb-src) on the mirror, and with the
#                       keyring, that this machine's own apt sources name for Debian (deb822 or one-line format),
#                       with its own lists and archives under DIR; sets the array apt_opts for apt-get/apt-cache.
own_apt() {
  local dir=$1 suite=$2 mirror keyring
  read -r mirror keyring < <(python3 - <<'PY'
from pathlib import Path
sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
for path in (p for p in sources if p.is_file() and p.suffix in (".list", ".sources")):
    for stanza in path.read_text().split("\n\n"):
        lines = [line for line in stanza.splitlines() if not line.lstrip().startswith("#")]
        pairs = (line.split(":", 1) for line in lines if ":" in line and not line[0].isspace())
        fields = {k.strip(): v.split()[0] if k.strip() == "Signed-By" and v.split() else v.strip() for k, v in pairs}
        if path.suffix == ".sources" and "bookworm" in fields.get("Suites", "").split() \
                and "main" in fields.get("Components", "").split() and "security" not in fields.get("URIs", ""):
            print(fields["URIs"].split()[0], fields.get("Signed-By") or "-")
            raise SystemExit
        for line in lines:
            words = line.split()
            if path.suffix == ".list" and words[:1] == ["deb"] and "bookworm" in words and "main" in words:
                keys = [w.split("=", 1)[1].rstrip("]") for w in words if w.lstrip("[").startswith("signed-by=")]
                print(next(w for w in words[1:] if "://" in w), keys[0] if keys else "-")
                raise SystemExit
raise SystemExit("no Debian bookworm main in /etc/apt/sources.list or /etc/apt/sources.list.d")
PY
)
  [ -n "${mirror:-}" ] || { echo "own-apt: no Debian mirror found in this machine's apt sources" >&2; return 1; }
  [ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg   # none named, or an inline key
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/parts" "$dir/cache"
  printf 'deb [signed-by=%s] %s %s main\ndeb-src [signed-by=%s] %s %s main\n' \
    "$keyring" "$mirror" "$suite" "$keyring" "$mirror" "$suite" >"$dir/sources.list"
  # shellcheck disable=SC2034  # for the caller
  apt_opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/parts"
            -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Dir::Cache::archives=$dir/archives")
}
