#!/usr/bin/env bash
# Runs a command in a small QEMU guest whose Vulkan calls go through bypass to a bypassd on
# this machine, over a shared-memory PCI device (ivshmem-plain; see docs/vm.md, "Guests that
# are virtual machines").
#
#   bypassd --vm vm1:/dev/shm/bypass-vm1 &                    # the host side
#   scripts/vm.sh --device /dev/shm/bypass-vm1 run -- vulkaninfo --summary
#   scripts/vm.sh --device /dev/shm/bypass-vm1 --out outdir run -- \
#       build/samples/triangle --out triangle.ppm             # files it writes under its
#                                                             # working directory come back
#
# The guest is Debian 12 from this machine's own packages only: the kernel installed by
# linux-image-amd64 (/boot/vmlinuz-*), and an initramfs holding busybox, the Vulkan loader,
# the bypass ICD, vulkaninfo, the samples and the shared libraries they need, copied from this
# host at their own paths (so a path that works here works in the guest). No kernel module of
# ours: the guest maps the device's BAR through sysfs (resource2), and its doorbells are
# virtio-serial ports (Debian's virtio_console module, loaded by the init). The command runs as root in a
# tmpfs working directory; its stdout and stderr, its exit status and every file it left in
# that directory come back over a second serial port (a tar, base64) when it ends.
#
# Commands:
#   image                build (or refresh) the guest image only
#   run -- COMMAND...    boot, run COMMAND, copy its files to --out, exit with its status
# Options:
#   --device PATH        the device file bypassd serves (--vm NAME:PATH); default $BYPASS_VM_DEVICE.
#                        Repeatable: each is one more ivshmem device, in PCI address order (e.g. a
#                        VM's own vmqd control device beside the shared pool device). Where
#                        bypassd listens for the device's doorbells (PATH.<slot>.sock), each
#                        becomes a virtio-serial port of the guest
#   --no-doorbell        leave the doorbells out: the device's sessions poll (for comparisons)
#   --doorbell-slots N,M only these slots' doorbells (default: every socket found). A device two
#                        VMs map (a crossover link) gives each VM its own side: a slot's stream
#                        belongs to one QEMU
#   --out DIR            where the command's files go (default: ./vm-out)
#   --build DIR          the build tree (default: <repo>/build)
#   --env NAME=VALUE     set in the guest's environment (repeatable), e.g. BYPASS_MEMORY=shadow
#   --include PATH       also copy this file (and the libraries it needs) into the image
#   --memory MIB         guest RAM (default 384)
#   --smp N              guest CPUs (default 1)
#   --accel kvm|tcg|auto (default auto: KVM if a probe boot works here, else TCG; cached)
#   --timeout SECONDS    kill the VM after this long (default 300)
#   --keep               keep the work directory (console log, QEMU's pid) and print its path
#   --monitor PATH       QEMU's human monitor on a UNIX socket at PATH (e.g. to send system_reset)
#   --allow-reboot       a reset or reboot restarts the guest, which runs COMMAND again (by default
#                        it ends the VM)
# Environment: BYPASS_VM_PIDFILE=PATH also writes QEMU's pid there (for tests that kill it).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$repo/build"
devices=()
out="$PWD/vm-out"
memory=384
smp=1
accel=auto
timeout_s=300
keep=0
guest_env=()
includes=()
monitor=""
no_reboot=(-no-reboot)
doorbells=1
doorbell_slots="0,1,2,3,4,5,6,7"

die() { echo "vm.sh: $*" >&2; exit 125; }

while (($#)); do
  case "$1" in
    --device) devices+=("$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --env) guest_env+=("$2"); shift 2 ;;
    --include) includes+=("$2"); shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --smp) smp="$2"; shift 2 ;;
    --accel) accel="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --monitor) monitor="$2"; shift 2 ;;
    --allow-reboot) no_reboot=(); shift ;;
    --no-doorbell) doorbells=0; shift ;;
    --doorbell-slots) doorbell_slots="$2"; shift 2 ;;
    image|run) break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
(($#)) || die "say image or run -- COMMAND... (see --help)"
command="$1"; shift

image_dir="$build/vm"
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true)
[[ -n "$kernel" && -r "$kernel" ]] || die "no readable /boot/vmlinuz-*: install linux-image-amd64 (scripts/setup.sh)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run scripts/setup.sh"
busybox=$(command -v busybox || true)
[[ -n "$busybox" ]] && file -L "$busybox" 2>/dev/null | grep -q "statically linked" || busybox=/bin/busybox
[[ -x "$busybox" ]] || die "busybox missing: install busybox-static (scripts/setup.sh)"

# ------------------------------------------------------------------------------- the image
default_files() {
  echo /usr/bin/vulkaninfo
  echo "$build/guest-icd/libbypass_icd.so"
  echo "$build/guest-icd/bypass_icd.json"
  local f
  for f in "$build"/samples/* "$build"/tests/e2e_probe "$build"/bench/icd_bench; do
    [[ -f "$f" && -x "$f" ]] && echo "$f"
  done
  # The loader dlopens these; the ICD's X11 presentation does too (unused without a display).
  ls -1 /usr/lib/x86_64-linux-gnu/libvulkan.so.1* 2>/dev/null
  # The crossover NIC's endpoint makes a TAP device: the guest kernel's tun module (loaded by
  # /init), and the endpoint and its test probe where they are built.
  local modules="/lib/modules/${kernel#/boot/vmlinuz-}/kernel/drivers" m
  [[ -f "$modules/net/tun.ko" ]] && echo "$modules/net/tun.ko"
  # The doorbells' virtio-serial ports: virtio_console and what it needs, in load order.
  for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev \
           virtio/virtio_pci char/virtio_console; do
    [[ -f "$modules/$m.ko" ]] && echo "$modules/$m.ko"
  done
  # The VM-queue domain probe (tests/vm/vmq_vm_test.py), where it is built.
  for f in "$build/crossover/bypass-xover" "$build/tests/crossover/xover_probe" "$build/tests/vmqueue/vmq_probe"; do
    [[ -f "$f" && -x "$f" ]] && echo "$f"
  done
  return 0
}

# Every file plus the shared libraries it needs, by the paths ldd names and their real paths.
closure() {
  local f
  for f in "$@"; do
    echo "$f"
    if file -L "$f" 2>/dev/null | grep -q "dynamically linked\|shared object"; then
      ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'
    fi
  done | sort -u
}

build_image() {
  local files stamp staging
  mapfile -t files < <(default_files; ((${#includes[@]} == 0)) || printf '%s\n' "${includes[@]}")
  for f in "${files[@]}"; do [[ -e "$f" ]] || die "$f does not exist (build first: cmake --build build)"; done
  stamp=$( (echo "$kernel"; stat -c '%n %s %Y' "${files[@]}" "$busybox" "$0") | sha256sum | cut -c1-16)
  if [[ -f "$image_dir/base.cpio" && "$(cat "$image_dir/stamp" 2>/dev/null)" == "$stamp" ]]; then
    return 0
  fi
  # Tests boot two guests at once: after a rebuild both found the image stale and built it in
  # the same files (one's `mv` then failed). One builds it under the lock, the other waits and
  # finds it fresh.
  mkdir -p "$image_dir"
  local lock
  exec {lock}>"$image_dir/lock"
  flock "$lock"
  if [[ -f "$image_dir/base.cpio" && "$(cat "$image_dir/stamp" 2>/dev/null)" == "$stamp" ]]; then
    exec {lock}>&-
    return 0
  fi
  echo "vm.sh: building the guest image in $image_dir" >&2
  staging=$(mktemp -d "$image_dir/staging.XXXXXX")
  # Debian 12 has a merged /usr: /lib, /lib64, /bin, /sbin are links into it.
  mkdir -p "$staging"/{usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,run,root,work,etc}
  ln -s usr/bin "$staging/bin"; ln -s usr/sbin "$staging/sbin"
  ln -s usr/lib "$staging/lib"; ln -s usr/lib64 "$staging/lib64"
  cp "$busybox" "$staging/usr/bin/busybox"
  local f real
  while read -r f; do
    real=$(readlink -f "$f")
    mkdir -p "$staging$(dirname "$real")"
    [[ -e "$staging$real" ]] || cp "$real" "$staging$real"
    # Debug information is most of our own binaries' size and of no use in the guest.
    if [[ "$real" == "$build"/* ]] && file "$real" | grep -q ELF; then strip --strip-debug "$staging$real"; fi
    if [[ "$f" != "$real" ]]; then
      mkdir -p "$staging$(dirname "$f")"
      [[ -e "$staging$f" || -L "$staging$f" ]] || ln -s "$real" "$staging$f"
    fi
  done < <(closure "${files[@]}")
  cat > "$staging/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in net/tun virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev virtio/virtio_pci_legacy_dev \
         virtio/virtio_pci char/virtio_console; do
  for f in /lib/modules/*/kernel/drivers/$m.ko; do [ -f "$f" ] && insmod "$f" 2>/dev/null; done
done
# The initramfs root is already writable memory: no tmpfs over /tmp, which would hide a build
# tree that lives there (copied into the image at its own path).
mkdir -p /out && mount -t tmpfs out /out
echo "bypass-vm: up after $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
export HOME=/root XDG_RUNTIME_DIR=/tmp PATH=/usr/bin:/usr/sbin
export VK_DRIVER_FILES=$(cat /etc/bypass-icd)
export BYPASS_ENDPOINT=ivshmem:
. /run/env
cd /out
sh /run/command > /tmp/stdout 2> /tmp/stderr
echo $? > /tmp/status
echo "bypass-vm: command ended after $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
mkdir -p /tmp/result && cp /tmp/stdout /tmp/stderr /tmp/status /tmp/result/
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{ tar -C /out -cf - . | base64; echo "=== files"; tar -C /tmp/result -cf - . | base64; echo "=== end"; } > /dev/ttyS1
sync
echo "bypass-vm: results sent after $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
echo "bypass-vm: done (status $(cat /tmp/status))" > /dev/console
poweroff -f
INIT
  chmod +x "$staging/init"
  echo "$build/guest-icd/bypass_icd.json" > "$staging/etc/bypass-icd"
  (cd "$staging" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$image_dir/base.cpio.new"
  mv "$image_dir/base.cpio.new" "$image_dir/base.cpio"
  echo "$stamp" > "$image_dir/stamp"
  rm -rf "$staging"
  exec {lock}>&-
  echo "vm.sh: image $(du -h "$image_dir/base.cpio" | cut -f1) (kernel $kernel)" >&2
}

build_image
[[ "$command" == image ]] && exit 0
[[ "$command" == run ]] || die "unknown command $command"
[[ "${1:-}" == "--" ]] && shift
(($#)) || die "run needs -- COMMAND..."
((${#devices[@]})) || [[ -z "${BYPASS_VM_DEVICE:-}" ]] || devices=("$BYPASS_VM_DEVICE")
((${#devices[@]})) || die "say which device: --device PATH (the file bypassd serves with --vm NAME:PATH)"
ivshmem=()
ports=()
for i in "${!devices[@]}"; do
  device=${devices[$i]}
  [[ -f "$device" ]] || die "$device does not exist: start bypassd --vm NAME:$device first"
  id=bypass; ((i == 0)) || id="bypass$i"
  ivshmem+=(-object "memory-backend-file,id=$id,share=on,mem-path=$device,size=$(stat -c %s "$device")"
    -device "ivshmem-plain,memdev=$id")
  # The slots' doorbells: a port named "<file name>.<slot>" on bypassd's socket for the slot.
  ((doorbells)) || continue
  for slot in ${doorbell_slots//,/ }; do
    [[ -S "$device.$slot.sock" ]] || continue
    ports+=(-chardev "socket,id=$id-bell$slot,path=$device.$slot.sock,reconnect=1"
      -device "virtserialport,chardev=$id-bell$slot,name=$(basename "$device").$slot")
  done
done
((${#ports[@]} == 0)) || ports=(-device virtio-serial-pci "${ports[@]}")

work=$(mktemp -d "${TMPDIR:-/tmp}/bypass-vm.XXXXXX")
cleanup() {
  if [[ -f "$work/qemu.pid" ]]; then kill -9 "$(cat "$work/qemu.pid")" 2>/dev/null || true; fi
  if ((keep)); then echo "vm.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The per-run part of the initramfs: the command and its environment (appended to the base).
mkdir -p "$work/run/run"
{
  printf 'cd /out\nexec'
  printf ' %q' "$@"
  printf '\n'
} > "$work/run/run/command"
: > "$work/run/run/env"
for kv in "${guest_env[@]+"${guest_env[@]}"}"; do printf 'export %q\n' "$kv" >> "$work/run/run/env"; done
(cd "$work/run" && find . | cpio -o -H newc --quiet) > "$work/run.cpio"
cat "$image_dir/base.cpio" "$work/run.cpio" > "$work/initrd"

# no_timer_check: the kernel's early check that the IO-APIC delivers timer interrupts gives up
# when an emulated (TCG) CPU on a loaded host runs too slowly for it, and panics ("IO-APIC +
# timer doesn't work!"); it happened to one of two VMs booting at once under a full test run.
qemu_argv() {  # $1: accel, $2: initrd; sets the array qemu
  local cpu=max
  [[ "$1" == kvm ]] && cpu=host
  qemu=(qemu-system-x86_64 -machine pc -accel "$1" -cpu "$cpu" -m "$memory" -smp "$smp" -nodefaults
    -display none "${no_reboot[@]}" -kernel "$kernel" -initrd "$2"
    -append "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check rdinit=/init")
}

# KVM where a guest really boots under it (here /dev/kvm may exist and still not run one).
if [[ "$accel" == auto ]]; then
  if [[ -f "$image_dir/accel" ]]; then
    accel=$(cat "$image_dir/accel")
  else
    accel=tcg
    if [[ -w /dev/kvm ]]; then
      mkdir -p "$work/probe/run"; echo true > "$work/probe/run/command"; : > "$work/probe/run/env"
      (cd "$work/probe" && find . | cpio -o -H newc --quiet) | cat "$image_dir/base.cpio" - > "$work/probe.initrd"
      qemu_argv kvm "$work/probe.initrd"
      if timeout 20 "${qemu[@]}" -serial file:"$work/probe.console" -serial null >/dev/null 2>&1 &&
         grep -q "bypass-vm: done" "$work/probe.console"; then
        accel=kvm
      fi
    fi
    echo "$accel" > "$image_dir/accel"
    echo "vm.sh: accelerator: $accel (cached in $image_dir/accel)" >&2
  fi
fi

start=$(date +%s.%N)
set +e
qemu_argv "$accel" "$work/initrd"
timeout --signal=KILL "$timeout_s" "${qemu[@]}" \
  -serial file:"$work/console.log" -serial file:"$work/data.b64" \
  "${ivshmem[@]}" "${ports[@]+"${ports[@]}"}" \
  ${monitor:+-monitor "unix:$monitor,server=on,wait=off"} \
  -pidfile "$work/qemu.pid" -daemonize >"$work/qemu.out" 2>&1
rc=$?
set -e
((rc == 0)) || { cat "$work/qemu.out" >&2; die "QEMU did not start (status $rc)"; }
pid=$(cat "$work/qemu.pid")
[[ -n "${BYPASS_VM_PIDFILE:-}" ]] && echo "$pid" > "$BYPASS_VM_PIDFILE"
deadline=$(( $(date +%s) + timeout_s ))
while kill -0 "$pid" 2>/dev/null; do
  if (( $(date +%s) >= deadline )); then
    kill -9 "$pid" 2>/dev/null || true
    die "the VM ran past --timeout $timeout_s s; console: $(tail -n 20 "$work/console.log")"
  fi
  sleep 0.05
done
rm -f "$work/qemu.pid"
elapsed=$(python3 -c "print(f\"{$(date +%s.%N) - $start:.2f}\")")

grep -q "^=== end" "$work/data.b64" 2>/dev/null || {
  echo "vm.sh: the VM ended without its results; console:" >&2
  cat "$work/console.log" >&2
  exit 125
}
mkdir -p "$out" "$work/result"
python3 - "$work/data.b64" "$out" "$work/result" <<'PY'
import base64, io, sys, tarfile
text = open(sys.argv[1], "rb").read().decode("ascii", "replace")
files, rest = text.split("=== files", 1)
result = rest.split("=== end", 1)[0]
for blob, where in ((files, sys.argv[2]), (result, sys.argv[3])):
    data = base64.b64decode("".join(blob.split()))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where)
PY
cat "$work/result/stdout"
cat "$work/result/stderr" >&2
status=$(cat "$work/result/status")
up=$(sed -n 's/.*bypass-vm: up after \([0-9.]*\) s.*/\1/p' "$work/console.log" | head -n1)
echo "vm.sh: $accel guest, kernel up after ${up:-?} s, whole run ${elapsed} s, status $status" >&2
exit "$status"
