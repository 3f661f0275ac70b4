#!/usr/bin/env bash
# Installs and starts Gateway AI (gatewayd + gwctl) on this machine. Safe to run again: it
# rebuilds, reinstalls, keeps an existing config and data, and restarts the daemon. A kept
# config is checked by the new gatewayd (--check-config) before anything is replaced: when it
# is invalid, nothing is installed, and the running daemon and its unit are left as they are.
# Also installs the manual pages (gwctl(1), gatewayd(1) and a page per command, in
# PREFIX/share/man/man1) and gwctl's shell completions (PREFIX/share/bash-completion/
# completions/gwctl, PREFIX/share/zsh/site-functions/_gwctl, PREFIX/share/fish/
# vendor_completions.d/gwctl.fish), where man, bash, zsh and fish look under /usr/local and
# ~/.local.
#
#   ./install.sh                      # build, install, write default config, start gatewayd
#   ./install.sh --systemd            # (root) install and start a hardened systemd unit instead
#   ./install.sh --prefix /opt/gw     # install binaries under /opt/gw/bin
#
# Options:
#   --prefix DIR      where bin/ goes (default /usr/local as root, ~/.local otherwise)
#   --config-dir DIR  where gatewayd.toml goes (default /etc/gatewayd, ~/.config/gatewayd)
#   --data-dir DIR    database and TLS material (default /var/lib/gatewayd, ~/.local/share/gatewayd)
#   --socket PATH     admin socket, written into a new config (default: gatewayd's own default;
#                     with --systemd /run/gatewayd/admin.sock, the unit's RuntimeDirectory)
#   --proxy-listen A  proxy listen address, written into a new config (default 127.0.0.1:8080)
#   --admin-listen A  HTTPS management address, written into a new config (default 127.0.0.1:8443)
#   --systemd         install /etc/systemd/system/gatewayd.service and start it (root only):
#                     user and group gatewayd; members of the group can use gwctl
#   --no-start        install only
#   --bin-dir DIR     install the gatewayd and gwctl found in DIR instead of building them
#                     (a build of your own or a CI artifact; the test suite uses its own)
# Environment: INSTALL_PROFILE=dev builds a debug binary instead of a release one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
is_root=false; [ "$(id -u)" -eq 0 ] && is_root=true

if $is_root; then
  prefix=/usr/local; config_dir=/etc/gatewayd; data_dir=/var/lib/gatewayd
else
  prefix="$HOME/.local"
  config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/gatewayd"
  data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/gatewayd"
fi
bin_dir=""; socket=""; proxy_listen="127.0.0.1:8080"; admin_listen="127.0.0.1:8443"; use_systemd=false; start=true

usage_error() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix|--config-dir|--data-dir|--socket|--proxy-listen|--admin-listen|--bin-dir)
      if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value (see --help)"; fi
      case "$2" in --*) usage_error "$1 needs a value, not the option $2 (see --help)" ;; esac
      case "$2" in *[[:cntrl:]]*) usage_error "$1: the value has a control character" ;; esac ;;
  esac
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --config-dir) config_dir="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --socket) socket="$2"; shift 2 ;;
    --proxy-listen) proxy_listen="$2"; shift 2 ;;
    --admin-listen) admin_listen="$2"; shift 2 ;;
    --systemd) use_systemd=true; shift ;;
    --no-start) start=false; shift ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage_error "unknown option $1 (see --help)" ;;
  esac
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

if $use_systemd && ! $is_root; then die "--systemd needs root"; fi
# Under the unit everything but its own directories is read-only (ProtectSystem=strict), and
# gwctl looks in /run/gatewayd by default: the socket lives in the unit's RuntimeDirectory.
runtime_dir=/run/gatewayd
if $use_systemd; then
  [ -n "$socket" ] || socket="$runtime_dir/admin.sock"
  case "$socket" in
    "$runtime_dir"/*) ;;
    *) usage_error "--socket $socket: under systemd the socket lives in the unit's RuntimeDirectory, $runtime_dir/ (the default is $runtime_dir/admin.sock)" ;;
  esac
fi

# 1. Build (unless given binaries).
if [ -n "$bin_dir" ]; then
  for bin in gatewayd gwctl; do
    [ -x "$bin_dir/$bin" ] || die "--bin-dir $bin_dir has no executable $bin"
  done
  say "installing the binaries in $bin_dir"
else
  command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
  profile="${INSTALL_PROFILE:-release}"
  say "building gatewayd and gwctl ($profile)"
  # Cargo's own target directory, when the environment moves it (relative to the repo: we build there).
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$here/$target_dir" ;; esac
  if [ "$profile" = release ]; then
    (cd "$here" && cargo build --release --locked -p gatewayd -p gwctl)
    bin_dir="$target_dir/release"
  else
    (cd "$here" && cargo build --locked -p gatewayd -p gwctl)
    bin_dir="$target_dir/debug"
  fi
fi

# 2. A kept config, checked by the gatewayd about to be installed, before anything changes:
#    an invalid one leaves the installed binaries, the unit and the running daemon as they are.
config="$config_dir/gatewayd.toml"
if [ -e "$config" ]; then
  say "keeping existing config $config"
  "$bin_dir/gatewayd" --check-config "$config" \
    || die "the config $config is invalid (see above); nothing was changed: fix it and run install.sh again"
  # The kept config decides where the data (and so the running daemon's pid file) lives.
  kept="$("$bin_dir/gatewayd" --config "$config" --print-data-dir)" \
    || die "the config $config is invalid"
  if [ "$kept" != "$data_dir" ]; then
    say "its data_dir is $kept (not $data_dir): using that"
    data_dir="$kept"
  fi
fi

# 3. Install the binaries (rename into place, so a running daemon's binary is never truncated),
#    then the manual pages and completions they generate (gwctl man, gatewayd man, gwctl
#    completions), so those always match the flags of the binaries installed.
mkdir -p "$prefix/bin"
for bin in gatewayd gwctl; do
  install -m 0755 "$bin_dir/$bin" "$prefix/bin/.$bin.new"
  mv -f "$prefix/bin/.$bin.new" "$prefix/bin/$bin"
done
say "installed $prefix/bin/gatewayd and $prefix/bin/gwctl"
man_dir="$prefix/share/man/man1"
pages="$(mktemp -d)"
trap 'rm -rf "$pages"' EXIT
"$prefix/bin/gwctl" man --out-dir "$pages" || die "gwctl man failed"
"$prefix/bin/gatewayd" man --out-dir "$pages" || die "gatewayd man failed"
mkdir -p "$man_dir"
# Pages of commands an older version had are ours to remove.
rm -f "$man_dir"/gwctl.1 "$man_dir"/gwctl-*.1 "$man_dir"/gatewayd.1 "$man_dir"/gatewayd-*.1
install -m 0644 "$pages"/*.1 "$man_dir/"
say "installed the manual pages in $man_dir (man gwctl, man gatewayd)"
install_completion() { # shell, file
  mkdir -p "$(dirname "$2")"
  "$prefix/bin/gwctl" completions "$1" > "$2.new" || die "gwctl completions $1 failed"
  chmod 0644 "$2.new"
  mv -f "$2.new" "$2"
}
install_completion bash "$prefix/share/bash-completion/completions/gwctl"
install_completion zsh "$prefix/share/zsh/site-functions/_gwctl"
install_completion fish "$prefix/share/fish/vendor_completions.d/gwctl.fish"
say "installed gwctl's completions for bash, zsh and fish under $prefix/share"

# 4. Config and data directory, only if absent.
mkdir -p "$config_dir"
# A TOML basic string: backslashes and quotes escaped.
toml_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
if [ ! -e "$config" ]; then
  socket_line="# socket = \"/run/gatewayd/admin.sock\"   # default: see gatewayd's docs"
  [ -n "$socket" ] && socket_line="socket = $(toml_str "$socket")"
  $use_systemd && socket_line="$socket_line               # in the unit's RuntimeDirectory"
  umask 027
  cat > "$config" <<TOML
# gatewayd configuration. Every field is optional; unset fields use the embedded defaults.
data_dir = $(toml_str "$data_dir")

[proxy]
listen = $(toml_str "$proxy_listen")
trusted_proxies = []                    # CIDRs whose X-Forwarded-For is believed

[admin]
$socket_line
listen = $(toml_str "$admin_listen")               # HTTPS; tls_cert / tls_key, else self-signed

# Provider credentials are read from the environment or a file, never from this file:
# [providers.openai]
# base_url = "https://api.openai.com"
# api_key_env = "OPENAI_API_KEY"        # or api_key_file = "/etc/gatewayd/secrets/openai"
TOML
  umask 022
  say "wrote default config $config"
  "$prefix/bin/gatewayd" --check-config "$config" || die "the config $config is invalid"
fi
mkdir -p "$data_dir"
chmod 0700 "$data_dir"

$start || { say "installed; not started (--no-start)"; exit 0; }

# 5a. systemd.
if $use_systemd; then
  if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
    die "systemd is not running here"
  fi
  # The group first: it may exist without the user (an operator created it to join it).
  getent group gatewayd >/dev/null || groupadd --system gatewayd
  id -u gatewayd >/dev/null 2>&1 \
    || useradd --system --gid gatewayd --home-dir "$data_dir" --no-create-home \
         --shell /usr/sbin/nologin gatewayd
  chown -R gatewayd:gatewayd "$data_dir"
  chgrp gatewayd "$config"
  # Checked once more as the user the unit runs as, who must be able to read every file the
  # config names (this script runs as root, who reads anything); still before the unit is
  # rewritten and the daemon restarted.
  if command -v setpriv >/dev/null; then
    setpriv --reuid gatewayd --regid gatewayd --init-groups \
      "$prefix/bin/gatewayd" --check-config "$config" \
      || die "gatewayd --check-config $config failed as the user gatewayd, the unit's (see above); gatewayd was not restarted"
  fi
  # The state directory is the data directory when it is the default one; systemd resets its
  # mode on every start (0755 unless told), and it holds the database and the TLS key.
  state_directory=""
  [ "$data_dir" = /var/lib/gatewayd ] && state_directory="StateDirectory=gatewayd
StateDirectoryMode=0700"
  cat > /etc/systemd/system/gatewayd.service <<UNIT
[Unit]
Description=Gateway AI LLM gateway
After=network-online.target
Wants=network-online.target

[Service]
# gatewayd sends READY=1 once its listeners are up, STOPPING=1 when it starts draining.
Type=notify
NotifyAccess=main
ExecStart=$prefix/bin/gatewayd --config $config
ExecReload=/bin/kill -HUP \$MAINPID
User=gatewayd
Group=gatewayd
$state_directory
# /run/gatewayd: the admin socket (0660), reachable by the gatewayd group only.
RuntimeDirectory=gatewayd
RuntimeDirectoryMode=0750
UMask=0077
Restart=on-failure
TimeoutStopSec=45
LimitNOFILE=65536
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$data_dir
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
PrivateMounts=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable gatewayd >/dev/null
  # Type=notify: this returns once gatewayd reported ready, or fails if it did not.
  systemctl restart gatewayd || die "gatewayd failed to start (journalctl -u gatewayd)"
  say "gatewayd is running under systemd (systemctl status gatewayd; journalctl -u gatewayd)"
  # The socket it serves (a kept config may name its own), from the status it reported.
  served_socket="$(systemctl show --property StatusText --value gatewayd \
    | sed -n 's/.*, socket \(.*\), [0-9]* keys$/\1/p')"
  [ -n "$served_socket" ] || served_socket="$socket"
  say "admin socket: $served_socket (mode 0660, group gatewayd)"
  say "operators join the gatewayd group to use gwctl: usermod -aG gatewayd USER, then log in again"
  if [ "$served_socket" = "$runtime_dir/admin.sock" ]; then
    say "next: gwctl keys create --name my-service"
  else
    say "next: gwctl --socket $served_socket keys create --name my-service"
  fi
  exit 0
fi

# 5b. A background process, restarted if this script started one before.
pidfile="$data_dir/gatewayd.pid"
logfile="$data_dir/gatewayd.log"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  old="$(cat "$pidfile")"
  say "stopping the running gatewayd (pid $old)"
  kill -TERM "$old"
  for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$old" 2>/dev/null && die "gatewayd (pid $old) did not stop"
fi
log_offset=$(( $( [ -f "$logfile" ] && wc -c <"$logfile" || echo 0 ) + 1 ))
nohup "$prefix/bin/gatewayd" --config "$config" >>"$logfile" 2>&1 </dev/null &
echo $! > "$pidfile"
ready=false
for _ in $(seq 1 100); do
  if tail -c "+$log_offset" "$logfile" 2>/dev/null | grep -q "gatewayd: ready"; then ready=true; break; fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || break
  sleep 0.1
done
$ready || { tail -c "+$log_offset" "$logfile" | tail -n 20 >&2; die "gatewayd failed to start (log: $logfile)"; }
say "gatewayd is running (pid $(cat "$pidfile"), log $logfile)"
say "to run it in the foreground instead: kill $(cat "$pidfile"); $prefix/bin/gatewayd --config $config"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) say "add $prefix/bin to your PATH" ;; esac
# The socket the daemon serves (a kept config may name its own), from its ready line.
served_socket="$(tail -c "+$log_offset" "$logfile" | sed -n 's/.*gatewayd: ready.* socket=\(.*\) data_dir=.*/\1/p' | tail -n 1)"
if [ -n "$served_socket" ]; then
  say "next: gwctl --socket $served_socket keys create --name my-service"
else
  say "next: gwctl keys create --name my-service"
fi
