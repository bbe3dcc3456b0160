#!/usr/bin/env python3
"""Turns a CUDA source (kernels/*.cu) into C++ for the CPU emulation (tests/emu/emu.h).

Usage: cu_to_cc.py IN.cu OUT.cc

Each launch `kernel<<<grid, block[, shmem[, stream]]>>>(args)` becomes
`spw_emu::Launcher(grid, block[, shmem[, stream]]).Kernel("kernel", bound).Bind(kernel)(args)`,
where `bound` is the kernel's __launch_bounds__ (1024 without), so the emulated launch checks it
as the driver does. Each `__shared__ T name[...];` is followed (on its line) by
`spw_emu::FreshShared(&name, sizeof(name));`, which gives every block fresh (NaN-filled)
shared memory; `extern __shared__ T name[];` becomes `T* name = spw_emu::DynamicShared<T>();`,
the block's dynamic shared memory (launch's shmem bytes, NaN-filled per block). Everything else is left as written: the emulated cuda_runtime.h supplies
__global__, threadIdx, __syncthreads and the rest. A `#line` directive keeps compiler messages
pointing at the .cu file. Run at build time (tests/emu/CMakeLists.txt); never committed.
"""
import re
import sys

LAUNCH = re.compile(r"\b(\w+)\s*<<<(.*?)>>>\s*\(", re.S)
SHARED = re.compile(r"(__shared__\s+[\w:<>]+\s+(\w+)\s*(?:\[[^\]]*\]\s*)*;)")
DYNAMIC = re.compile(r"extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;")
BOUNDS = re.compile(r"__global__\s+void\s+__launch_bounds__\s*\(([^()]*)\)\s*(\w+)\s*\(")


def main() -> int:
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    bounds = {name: expr.strip() for expr, name in BOUNDS.findall(src)}

    def launch(m: re.Match) -> str:
        name, config = m.group(1), m.group(2)
        # Newlines inside the launch are kept so that line numbers still match the .cu file.
        return (f"spw_emu::Launcher({config}).Kernel(\"{name}\", {bounds.get(name, '1024')})"
                f".Bind({name})(")

    out, n = LAUNCH.subn(launch, src)
    out = DYNAMIC.sub(r"\1* \2 = spw_emu::DynamicShared<\1>();", out)
    out = SHARED.sub(r"\1 spw_emu::FreshShared(&\2, sizeof(\2));", out)
    if n == 0:
        print(f"cu_to_cc.py: no kernel launch in {src_path}", file=sys.stderr)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{src_path}"\n{out}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
