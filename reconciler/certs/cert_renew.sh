#!/bin/bash
# A master's side of a certificate renewal (reconciler.engine.cert_renewal builds the arguments; the certificate
# arrives on stdin, never inside this text). The new private key is made here and never leaves the host. Every mode
# that changes files holds a lock of the certificate's directory (.reconciler-renew.lock, flock): an install, an abort
# and a rollback never interleave. Linted by shellcheck. Run as `bash -c SCRIPT reconciler-cert-renew MODE ...`:
#
#   read CERT                  the current certificate (one PEM certificate, at most 64 KiB) on stdout; "@@ERR" when
#                              it is not a regular file or holds more than one certificate (a chain is not renewed)
#   csr KEYTYPE CERT           a new key (rsa-2048 | ecdsa-p256, mode 0600) made in a directory of its own beside
#                              CERT (.reconciler-renew.XXXXXX, mode 0700; ones a stopped renewal left over a day ago
#                              removed); "@@STAGED dir" then its CSR (only the key's proof is read by the signer)
#   install CERT KEY STAGED NOTBEFORE NOTAFTER [KUBECONFIG...]
#                              stdin: the signed certificate. Refused ("@@ERR", nothing changed) when STAGED is not such
#                              a directory beside CERT, when the certificate is not for the staged key, when KEY is not
#                              the current CERT's key (a spec naming another file), when this host's clock is not
#                              within [NOTBEFORE, NOTAFTER), or when the old pair cannot be kept. Else the old pair is
#                              kept as CERT.before-renew / KEY.before-renew, the new files take the old ones' owner and
#                              mode and are renamed over them back to back (key, then certificate), hangups and
#                              interrupts ignored from the first rename on (a pair is never split): "@@INSTALLED"
#                              Each KUBECONFIG after them (a kubeconfig embedding the pair as client-certificate-data /
#                              client-key-data) is written beside itself with the new pair in place of every embedded
#                              copy of the old one (refused when it embeds neither), kept as KUBECONFIG.before-renew,
#                              and renamed over itself right after the pair
#   rollback CERT KEY [KUBECONFIG...]  the pair (and kubeconfigs) kept before the renewal put back: "@@ROLLEDBACK"
#   done CERT KEY [KUBECONFIG...]  the renewal verified: what was kept before it removed (an old private key does
#                              not linger): "@@DONE"
#   abort STAGED CERT          a staged directory removed (a renewal that stopped before its install)
#   serial ADDRESS PORT        the serial of the certificate a TLS server there presents (openssl s_client)
#   bundle-read FILE           a CA bundle (a regular file) on stdout, at most 64 KiB and one byte (more: too big)
#   bundle-write FILE          stdin: the bundle's new content, written beside it with its owner and mode and renamed
#                              over it, the file as it was before the rotation kept as FILE.before-rotate (the first
#                              one: a phase run again keeps what the rotation began from): "@@WRITTEN"
#   bundle-rollback FILE       FILE.before-rotate put back: "@@ROLLEDBACK"; bundle-done FILE: it removed: "@@DONE"
#   fresh FILE UNIT...         "@@FRESH" when every unit is active and entered that state after FILE last changed
#                              (it reads the file as it is now), else "@@STALE why"
#   reloaded FILE UNIT STAMP...  "@@FRESH" when every active UNIT was reloaded by reconciler (STAMP: its reload stamp,
#                              a regular file) or started after FILE last changed; a unit not running is not asked
set -euo pipefail
export LC_ALL=C
mode=$1
shift
staged_ok() {  # $1 a staged directory beside the certificate $2
  case "$(basename -- "$1")" in .reconciler-renew.*) ;; *) return 1 ;; esac
  [ "$(dirname -- "$1")" = "$(dirname -- "$2")" ] && [ -d "$1" ] && [ ! -L "$1" ]
}
lock() {  # $1 the certificate: its directory's lock, held until this script ends
  exec 9>"$(dirname -- "$1")/.reconciler-renew.lock"
  flock -w 120 9 || { echo "@@ERR another renewal of $1 holds its lock"; exit 0; }
}
fail() { echo "@@ERR $*"; exit 0; }
pubkey_of_cert() { openssl x509 -noout -pubkey -in "$1" 2>/dev/null; }
pubkey_of_key() { openssl pkey -pubout -in "$1" 2>/dev/null; }
embed() {  # KUBECONFIG OLD_CERT OLD_KEY NEW_CERT NEW_KEY OUT: the kubeconfig with each embedded copy of the old pair
  # (client-certificate-data / client-key-data whose base64 decodes to the old file) replaced by the new one; prints
  # how many certificates and keys it replaced ("C K")
  local line value old_c old_k new_c new_k c=0 k=0
  old_c=$(cat -- "$2"); old_k=$(cat -- "$3"); new_c=$(base64 -w0 <"$4"); new_k=$(base64 -w0 <"$5")
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
    *client-certificate-data:*)
      value=${line##*client-certificate-data:}
      if [ "$(printf %s "${value//[[:space:]]/}" | base64 -d 2>/dev/null)" = "$old_c" ]; then
        line="${line%%client-certificate-data:*}client-certificate-data: $new_c"
        c=$((c + 1))
      fi
      ;;
    *client-key-data:*)
      value=${line##*client-key-data:}
      if [ "$(printf %s "${value//[[:space:]]/}" | base64 -d 2>/dev/null)" = "$old_k" ]; then
        line="${line%%client-key-data:*}client-key-data: $new_k"
        k=$((k + 1))
      fi
      ;;
    esac
    printf '%s\n' "$line"
  done <"$1" >"$6"
  echo "$c $k"
}
case "$mode" in
read)
  if [ -L "$1" ] || [ ! -f "$1" ]; then fail "$1 is not a regular file"; fi
  if [ "$(head -c 65536 -- "$1" | grep -c -- '-----BEGIN CERTIFICATE-----')" -gt 1 ]; then
    fail "$1 holds more than one certificate (a chain): not renewed"
  fi
  head -c 65536 -- "$1"
  ;;
csr)
  keytype=$1 cert=$2
  umask 077
  find "$(dirname -- "$cert")" -maxdepth 1 -name '.reconciler-renew.*' -type d -mtime +0 -exec rm -rf -- {} + 2>/dev/null || true
  dir=$(mktemp -d "$(dirname -- "$cert")/.reconciler-renew.XXXXXX")
  case "$keytype" in
  rsa-2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null ;;
  ecdsa-p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" 2>/dev/null ;;
  *) rm -rf -- "$dir"; fail "unknown key type" ;;
  esac
  echo "@@STAGED $dir"
  openssl req -new -key "$dir/key.pem" -subj "/CN=reconciler-renewal"
  ;;
install)
  cert=$1 key=$2 staged=$3 notbefore=$4 notafter=$5
  shift 5  # the rest: kubeconfigs that embed the pair
  lock "$cert"
  staged_ok "$staged" "$cert" || fail "$staged is not a staged renewal beside $cert"
  for f in "$cert" "$key" "$@"; do
    if [ -L "$f" ] || [ ! -f "$f" ]; then fail "$f is not a regular file"; fi
  done
  head -c 65536 >"$staged/cert.pem"
  now=$(date +%s)
  if [ "$now" -lt "$notbefore" ] || [ "$now" -ge "$notafter" ]; then
    fail "this host's clock ($(date -u +%FT%TZ)) is outside the certificate's validity: it would not be valid here"
  fi
  new_pub=$(pubkey_of_cert "$staged/cert.pem")
  if [ -z "$new_pub" ] || [ "$new_pub" != "$(pubkey_of_key "$staged/key.pem")" ]; then
    fail "the signed certificate is not for the staged key"
  fi
  old_pub=$(pubkey_of_cert "$cert")
  if [ -z "$old_pub" ] || [ "$old_pub" != "$(pubkey_of_key "$key")" ]; then
    fail "$key is not the key of $cert: nothing replaced"
  fi
  { cp -p -- "$cert" "$cert.before-renew.tmp" && mv -T -- "$cert.before-renew.tmp" "$cert.before-renew"; } \
    || fail "the old certificate could not be kept (disk full?): nothing replaced"
  { cp -p -- "$key" "$key.before-renew.tmp" && mv -T -- "$key.before-renew.tmp" "$key.before-renew"; } \
    || fail "the old key could not be kept (disk full?): nothing replaced"
  { chown --reference="$key" -- "$staged/key.pem" && chmod --reference="$key" -- "$staged/key.pem" \
    && chown --reference="$cert" -- "$staged/cert.pem" && chmod --reference="$cert" -- "$staged/cert.pem"; } \
    || fail "the new files could not take the old ones' owner and mode: nothing replaced"
  n=0
  for kc in "$@"; do  # each kubeconfig made beside it with the new pair embedded, its old one kept
    [ "$(stat -c %s -- "$kc")" -le 1048576 ] || fail "$kc is larger than 1 MiB: nothing replaced"
    said=$(embed "$kc" "$cert" "$key" "$staged/cert.pem" "$staged/key.pem" "$staged/kubeconfig.$n")
    case "$said" in "0 "* | *" 0") fail "$kc does not embed both $cert and its key: nothing replaced" ;; esac
    { cp -p -- "$kc" "$kc.before-renew.tmp" && mv -T -- "$kc.before-renew.tmp" "$kc.before-renew" \
      && chown --reference="$kc" -- "$staged/kubeconfig.$n" && chmod --reference="$kc" -- "$staged/kubeconfig.$n"; } \
      || fail "$kc could not be kept or its copy made (disk full?): nothing replaced"
    n=$((n + 1))
  done
  sync -f "$staged"/* 2>/dev/null || sync
  trap '' HUP INT TERM PIPE  # the pair swapped whole: a lost connection (SIGHUP) or a Ctrl-C never splits it
  mv -T -- "$staged/key.pem" "$key"
  mv -T -- "$staged/cert.pem" "$cert"
  n=0
  for kc in "$@"; do
    mv -T -- "$staged/kubeconfig.$n" "$kc"
    n=$((n + 1))
  done
  rm -rf -- "$staged"
  echo "@@INSTALLED"
  ;;
rollback)
  cert=$1 key=$2
  shift 2
  lock "$cert"
  if [ ! -f "$cert.before-renew" ] || [ ! -f "$key.before-renew" ]; then fail "no pair kept before the renewal"; fi
  trap '' HUP INT TERM PIPE
  mv -T -- "$key.before-renew" "$key"
  mv -T -- "$cert.before-renew" "$cert"
  for kc in "$@"; do
    if [ -f "$kc.before-renew" ]; then mv -T -- "$kc.before-renew" "$kc"; fi
  done
  echo "@@ROLLEDBACK"
  ;;
done)
  lock "$1"
  for f in "$@"; do rm -f -- "$f.before-renew"; done
  echo "@@DONE"
  ;;
abort)
  lock "$2"
  if staged_ok "$1" "$2"; then rm -rf -- "$1"; fi
  echo "@@ABORTED"
  ;;
bundle-read)
  if [ -L "$1" ] || [ ! -f "$1" ]; then fail "$1 is not a regular file"; fi
  head -c 65537 -- "$1"
  ;;
bundle-write)
  file=$1
  lock "$file"
  if [ -L "$file" ] || [ ! -f "$file" ]; then fail "$file is not a regular file"; fi
  umask 077
  tmp=$(mktemp "$(dirname -- "$file")/.reconciler-rotate.XXXXXX")
  head -c 65536 >"$tmp"
  if [ ! -f "$file.before-rotate" ]; then  # a rotation's phase stopped midway keeps the file it began from
    { cp -p -- "$file" "$file.before-rotate.tmp" && mv -T -- "$file.before-rotate.tmp" "$file.before-rotate"; } \
      || { rm -f -- "$tmp"; fail "the old file could not be kept (disk full?): nothing replaced"; }
  fi
  { chown --reference="$file" -- "$tmp" && chmod --reference="$file" -- "$tmp" && { sync -f "$tmp" 2>/dev/null || sync; }; } \
    || { rm -f -- "$tmp"; fail "the new file could not take the old one's owner and mode: nothing replaced"; }
  mv -T -- "$tmp" "$file"
  echo "@@WRITTEN"
  ;;
bundle-rollback)
  lock "$1"
  if [ ! -f "$1.before-rotate" ]; then fail "no file kept before the rotation"; fi
  mv -T -- "$1.before-rotate" "$1"
  echo "@@ROLLEDBACK"
  ;;
bundle-done)
  lock "$1"
  rm -f -- "$1.before-rotate"
  echo "@@DONE"
  ;;
fresh)  # FILE UNIT...: every unit active and (re)started after FILE last changed
  file=$1
  shift
  changed=$(stat -c %.9Y -- "$file")
  for unit in "$@"; do
    if [ "$(systemctl is-active -- "$unit" 2>/dev/null)" != active ]; then echo "@@STALE $unit is not active"; exit 0; fi
    at=$(systemctl show --timestamp=us+utc -p ActiveEnterTimestamp --value -- "$unit")
    entered=$(date -d "$at" +%s.%N 2>/dev/null) || { echo "@@STALE $unit: no start time"; exit 0; }
    if ! awk -v a="$entered" -v b="$changed" 'BEGIN { exit !(a > b) }'; then
      echo "@@STALE $unit started before $file changed"
      exit 0
    fi
  done
  echo "@@FRESH"
  ;;
reloaded) # FILE UNIT STAMP [UNIT STAMP...]
  file=$1
  shift
  changed=$(stat -c %.9Y -- "$file")
  while [ $# -ge 2 ]; do
    unit=$1 stamp=$2
    shift 2
    [ "$(systemctl is-active -- "$unit" 2>/dev/null)" = active ] || continue # not running: it reads FILE as it starts
    at=$(systemctl show --timestamp=us+utc -p ActiveEnterTimestamp --value -- "$unit")
    entered=$(date -d "$at" +%s.%N 2>/dev/null) || entered=0
    stamped=0
    if [ -f "$stamp" ] && [ ! -L "$stamp" ]; then stamped=$(stat -c %.9Y -- "$stamp"); fi
    if ! awk -v a="$entered" -v s="$stamped" -v b="$changed" 'BEGIN { exit !(a > b || s > b) }'; then
      echo "@@STALE $unit not reloaded since $file changed"
      exit 0
    fi
  done
  echo "@@FRESH"
  ;;
serial)
  said=$(timeout 10 openssl s_client -connect "$1:$2" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null) || true
  echo "@@SERIAL ${said#serial=}"
  ;;
*)
  echo "@@ERR unknown mode" >&2
  exit 2
  ;;
esac
