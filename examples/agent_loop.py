"""A tiny agent loop on kiln, with the model left out: a scripted list of tool
calls stands for what an LLM would ask for, one step at a time.

The shape is the intended one: ONE sandbox for the whole agent run, created
before the first step, used by every tool call (files and processes stay
between calls), destroyed at the end whatever happened.

    export KILN_HOST=unix:/run/kiln/kilnd.sock KILN_TOKEN=...
    PYTHONPATH=sdk/python /usr/bin/python3 examples/agent_loop.py [IMAGE]

Swap `scripted_model` for a call to your LLM: give it TOOLS' descriptions and
the transcript, and have it answer with the next (tool, arguments) or None.
"""
import sys
from typing import Callable, Dict, List, Optional, Tuple

from kiln import KilnError, Sandbox

image = sys.argv[1] if len(sys.argv) > 1 else "debian"


def run_command(sb: Sandbox, command: str, timeout_s: int = 60) -> str:
    r = sb.commands.run(command, timeout=timeout_s, check=False)
    return f"exit code {r.exit_code}\nstdout:\n{r.stdout}stderr:\n{r.stderr}"


def write_file(sb: Sandbox, path: str, content: str) -> str:
    sb.files.write(path, content)
    return f"wrote {len(content.encode())} bytes to {path}"


def read_file(sb: Sandbox, path: str) -> str:
    return sb.files.read(path)


def list_files(sb: Sandbox, path: str) -> str:
    return "\n".join(f"{e.type} {e.size} {e.name}" for e in sb.files.list(path))


#: The tools the "model" may call: name -> function of (sandbox, **arguments).
TOOLS: Dict[str, Callable[..., str]] = {
    "run_command": run_command, "write_file": write_file,
    "read_file": read_file, "list_files": list_files,
}

#: What an LLM would decide, step by step: write a program, run it, look at
#: its result, fix a bug, run it again, keep a report.
SCRIPT: List[Tuple[str, dict]] = [
    ("run_command", {"command": "mkdir -p /root/work && uname -s"}),
    ("write_file", {"path": "/root/work/count.sh",
                    "content": "n=0\nfor w in $(cat /root/work/words.txt); do n=$((n + 1)); done\n"
                               "echo \"words: $n\"\n"}),
    ("run_command", {"command": "sh /root/work/count.sh"}),           # no words.txt yet: cat complains
    ("write_file", {"path": "/root/work/words.txt", "content": "one microVM per agent run\n"}),
    ("run_command", {"command": "sh /root/work/count.sh | tee /root/work/report.txt"}),
    ("list_files", {"path": "/root/work"}),
    ("read_file", {"path": "/root/work/report.txt"}),
]


def scripted_model(transcript: List[Tuple[str, dict, str]]) -> Optional[Tuple[str, dict]]:
    """The next tool call, or None when the agent is done."""
    step = len(transcript)
    return SCRIPT[step] if step < len(SCRIPT) else None


def main() -> int:
    transcript: List[Tuple[str, dict, str]] = []
    with Sandbox.create(image=image, timeout=600, metadata={"example": "agent_loop"}) as sb:
        print(f"agent run in sandbox {sb.id}")
        while True:
            call = scripted_model(transcript)
            if call is None:
                break
            name, args = call
            try:
                result = TOOLS[name](sb, **args)
            except KilnError as e:  # the model sees errors as results, as it would over MCP
                result = f"error: {e}"
            transcript.append((name, args, result))
            print(f"[{len(transcript)}] {name} {args.get('command') or args.get('path')}")
            print("    " + result.strip().replace("\n", "\n    "))
        alive = sb.is_running()
    gone = all(i.id != sb.id for i in Sandbox.list())
    print(f"{len(transcript)} tool calls in one sandbox; it ran to the end: {alive}; "
          f"destroyed now: {gone}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
