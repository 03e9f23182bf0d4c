# Shell helpers shared by gpu.sh and replicas.sh (sourced; T0 and DEADLINE are the caller's).

log() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }
left() { echo $((DEADLINE - (SECONDS - T0))); }

http_ok() { # http_ok URL: status 200 within 2 s
  python3 -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"
}

http_get() { # http_get URL: the body (within 5 s)
  python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}
