"""A stand-in for an AI agent's tool call: inspect the sandbox, do some work,
leave a file behind (which vanishes with the VM)."""
import hashlib
import os
import platform
import subprocess

print(f"agent: running on {platform.node()}, kernel {platform.release()}, "
      f"{os.cpu_count()} vCPUs, python {platform.python_version()}")
with open("/proc/meminfo") as f:
    print("agent:", f.readline().strip())
work = "/root/work"
os.makedirs(work, exist_ok=True)
data = os.urandom(1 << 20)
with open(os.path.join(work, "blob"), "wb") as f:
    f.write(data)
print("agent: wrote 1 MiB, sha256", hashlib.sha256(data).hexdigest()[:16])
print("agent: git says", subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip())
print("agent: network interfaces:", sorted(os.listdir("/sys/class/net")))
