#!/bin/bash
# A master's side of a certificate renewal (reconciler.engine.cert_renewal builds the arguments; the certificate arrives on
# stdin, never inside this text). The new private key is made here and never leaves the host. Linted by shellcheck.
# Run as `bash -c SCRIPT reconciler-cert-renew MODE ...`:
#
#   read CERT                  the current certificate (at most 64 KiB) on stdout; "@@ERR" when it is not a file
#   csr KEYTYPE CERT           a new key (rsa-2048 | ecdsa-p256, mode 0600) made in a directory of its own beside
#                              CERT (.reconciler-renew.XXXXXX, mode 0700); "@@STAGED dir" then its CSR (the subject
#                              is not read by the signer: only the key's proof is)
#   install CERT KEY STAGED NOTBEFORE
#                              stdin: the signed certificate. Refused ("@@ERR") when STAGED is not such a directory
#                              beside CERT, when the certificate is not for the staged key, or when this host's clock
#                              is before NOTBEFORE (a certificate not yet valid here). Else the old pair is kept as
#                              CERT.before-renew / KEY.before-renew, the new files take the old ones' owner and mode,
#                              and are renamed over them back to back (key, then certificate): "@@INSTALLED"
#   rollback CERT KEY          the pair kept before the renewal put back (renamed, back to back): "@@ROLLEDBACK"
#   abort STAGED CERT          a staged directory removed (a renewal that stopped before its install)
#   serial ADDRESS PORT        the serial of the certificate a TLS server there presents (openssl s_client)
set -euo pipefail
export LC_ALL=C
mode=$1
shift
staged_ok() {  # $1 a staged directory beside the certificate $2
  case "$(basename -- "$1")" in .reconciler-renew.*) ;; *) return 1 ;; esac
  [ "$(dirname -- "$1")" = "$(dirname -- "$2")" ] && [ -d "$1" ] && [ ! -L "$1" ]
}
case "$mode" in
read)
  if [ -L "$1" ] || [ ! -f "$1" ]; then echo "@@ERR $1 is not a regular file"; exit 0; fi
  head -c 65536 -- "$1"
  ;;
csr)
  keytype=$1 cert=$2
  umask 077
  dir=$(mktemp -d "$(dirname -- "$cert")/.reconciler-renew.XXXXXX")
  case "$keytype" in
  rsa-2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null ;;
  ecdsa-p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" 2>/dev/null ;;
  *) rm -rf -- "$dir"; echo "@@ERR unknown key type"; exit 0 ;;
  esac
  echo "@@STAGED $dir"
  openssl req -new -key "$dir/key.pem" -subj "/CN=reconciler-renewal"
  ;;
install)
  cert=$1 key=$2 staged=$3 notbefore=$4
  if ! staged_ok "$staged" "$cert"; then echo "@@ERR $staged is not a staged renewal beside $cert"; exit 0; fi
  head -c 65536 >"$staged/cert.pem"
  if [ "$(date +%s)" -lt "$notbefore" ]; then
    echo "@@ERR this host's clock ($(date -u +%FT%TZ)) is before the certificate's start: it would not be valid here"
    exit 0
  fi
  if [ "$(openssl x509 -noout -pubkey -in "$staged/cert.pem")" != "$(openssl pkey -pubout -in "$staged/key.pem")" ]; then
    echo "@@ERR the signed certificate is not for the staged key"
    exit 0
  fi
  for f in "$cert" "$key"; do
    if [ -L "$f" ] || [ ! -f "$f" ]; then echo "@@ERR $f is not a regular file"; exit 0; fi
  done
  cp -p -- "$cert" "$cert.before-renew.tmp" && mv -T -- "$cert.before-renew.tmp" "$cert.before-renew"
  cp -p -- "$key" "$key.before-renew.tmp" && mv -T -- "$key.before-renew.tmp" "$key.before-renew"
  chown --reference="$key" -- "$staged/key.pem" && chmod --reference="$key" -- "$staged/key.pem"
  chown --reference="$cert" -- "$staged/cert.pem" && chmod --reference="$cert" -- "$staged/cert.pem"
  sync -f "$staged/key.pem" "$staged/cert.pem" 2>/dev/null || sync
  mv -T -- "$staged/key.pem" "$key"
  mv -T -- "$staged/cert.pem" "$cert"
  rm -rf -- "$staged"
  echo "@@INSTALLED"
  ;;
rollback)
  cert=$1 key=$2
  if [ ! -f "$cert.before-renew" ] || [ ! -f "$key.before-renew" ]; then echo "@@ERR no pair kept before the renewal"; exit 0; fi
  mv -T -- "$key.before-renew" "$key"
  mv -T -- "$cert.before-renew" "$cert"
  echo "@@ROLLEDBACK"
  ;;
abort)
  if staged_ok "$1" "$2"; then rm -rf -- "$1"; fi
  echo "@@ABORTED"
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
