"""kiln's Python SDK in one page: a sandbox, commands, files, a background process.

    export KILN_HOST=unix:/run/kiln/kilnd.sock KILN_TOKEN=...
    PYTHONPATH=sdk/python /usr/bin/python3 examples/sdk_quickstart.py [IMAGE]
"""
import sys

from kiln import CommandExitError, Sandbox

image = sys.argv[1] if len(sys.argv) > 1 else "debian"

with Sandbox.create(image=image, cpus=1, memory_mib=512, timeout=600,
                    metadata={"example": "quickstart"}) as sb:
    print("sandbox", sb.id, "expires", sb.info.expires_at)

    # A string runs with sh -c; a list is argv. Output can stream as it comes.
    r = sb.commands.run("uname -a; echo to stderr >&2",
                        on_stdout=lambda s: print("  live:", s, end=""))
    print("exit", r.exit_code, "stderr:", r.stderr.strip())

    try:
        sb.commands.run("echo failing >&2; exit 3")
    except CommandExitError as e:
        print("non-zero exit:", e.exit_code, e.stderr.strip())

    # Files both ways (a file object is streamed).
    sb.files.write("/root/work/hello.txt", "hello from the host\n")
    print(sb.commands.run("cat /root/work/hello.txt", cwd="/root/work").stdout, end="")
    print([e.name for e in sb.files.list("/root/work")])

    # A background process: reattach by pid, read what it printed, kill it.
    h = sb.commands.run("echo serving; sleep 1000", background=True, tag="server")
    print("processes:", [(p.pid, p.tag, p.state) for p in sb.commands.list()])
    h.kill()
    again = sb.commands.connect(h.pid, check=False).wait(timeout=30)
    print("server said", again.stdout.strip(), "and ended by signal", again.signal)

    sb.set_timeout(120)
# Leaving the with block deleted the sandbox.
