"""A real 64-bit popcount for Numba kernels: LLVM's ``llvm.ctpop.i64`` through an intrinsic.

Numba compiles for the host CPU, so on x86-64 this becomes the ``popcnt`` instruction (``vpopcntq`` where
AVX-512 VPOPCNTDQ exists and LLVM vectorises the loop). With ``NUMBA_DISABLE_JIT=1`` the same name is a plain
Python function, so every kernel stays runnable (slowly) as ordinary Python for tests.
"""

from __future__ import annotations

import numba

if numba.config.DISABLE_JIT:

    def popcount(x):
        """Number of set bits of a 64-bit word (pure-Python twin used when JIT is disabled)."""
        return int(x).bit_count()

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def popcount(typingctx, x):
        """Number of set bits of a uint64 word, as int64 (so sums never mix signed and unsigned)."""
        if x != types.uint64:
            return None
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.ctpop.i64")
            return builder.call(fn, [args[0]])

        return sig, codegen
