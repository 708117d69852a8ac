//go:build linux

package localenv

// guestForwardsUnit is the base images' forward relay unit (installed by
// debianVMSetup as /etc/systemd/system/instancestore-localenv-forwards.service).
const guestForwardsUnit = `# The local environment's forward relay (packer-plugin-instancestore localenv).
#
# The local EC2's metadata service serves /instancestore-localenv/forwards: one
# "LISTEN TARGET" pair a line, e.g. "127.0.0.1:9000 169.254.0.50:9000". LISTEN is the
# host:port the plugin presigned its S3 URLs for (the host's own loopback), which the
# guest cannot reach; TARGET is a qemu guestfwd address that carries a connection to
# that host service. For each pair the script starts a transient socket unit on LISTEN
# (the guest's own loopback) and systemd-socket-proxyd relaying every connection to
# TARGET, so the guest reaches the service under the very host:port that was signed.
#
# It asks the metadata service with an IMDSv2 token first, retries a few times, and
# exits 0 quietly when there is no such path (404 on real EC2) or no metadata service.
# Ordered before ssh.service so the relays are up when a communicator connects.
[Unit]
Description=Local environment forward relays (instancestore-localenv)
Wants=network-online.target
After=network-online.target
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/instancestore-localenv-forwards

[Install]
WantedBy=multi-user.target
`

// guestForwardsScript is /usr/local/sbin/instancestore-localenv-forwards, run by
// guestForwardsUnit.
const guestForwardsScript = `#!/bin/sh
# Starts the local environment's forward relays: see
# /etc/systemd/system/instancestore-localenv-forwards.service.
set -u
imds=http://169.254.169.254
list=/run/instancestore-localenv-forwards
token=
i=0
while [ "$i" -lt 5 ]; do
  token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' --connect-timeout 2 --max-time 5 "$imds/latest/api/token") && break
  token=
  i=$((i + 1))
  sleep 1
done
if [ -z "$token" ]; then
  echo "no metadata service token from $imds: no forwards"
  exit 0
fi
code=$(curl -s -o "$list" -w '%{http_code}' -H "X-aws-ec2-metadata-token: $token" --connect-timeout 2 --max-time 10 "$imds/instancestore-localenv/forwards")
if [ "$code" != 200 ]; then
  echo "no forwards (metadata service answered $code)"
  exit 0
fi
n=0
failed=0
while read -r listen target _; do
  [ -n "$listen" ] && [ -n "$target" ] || continue
  n=$((n + 1))
  unit=instancestore-forward-$n
  systemctl stop "$unit.socket" "$unit.service" 2>/dev/null
  systemctl reset-failed "$unit.socket" "$unit.service" 2>/dev/null
  if systemd-run --quiet --unit="$unit" --description="forward $listen to $target" \
    --socket-property=ListenStream="$listen" \
    /lib/systemd/systemd-socket-proxyd "$target"; then
    echo "forwarding $listen to $target"
  else
    echo "cannot forward $listen to $target" >&2
    failed=1
  fi
done < "$list"
exit "$failed"
`
