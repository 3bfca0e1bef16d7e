"""The byte-sliced scan: the flat scan's inner loop for a tile of queries, in AVX2 LLVM IR.

Why. The row-major loop (:func:`hashtool.hashindex._popcount.min_popcount4`) spends, per query and per
32 bytes of codes, 2 XORs, 2 ``vpshufb`` nibble lookups, an add, a ``vpsadbw`` (bytes to row sums) and a
minimum. Transposed so that one 128-bit lane holds *the same byte* of 16 different rows, the query's
nibble is one constant per lane, so its XOR folds into the lookup table itself
(``T[i] = popcount(i ^ query nibble)``), and the byte lanes are the rows, so no ``vpsadbw`` is needed:
2 lookups and 2 adds per query and 32 bytes, plus the nibble split, shared by the 4 queries of a group.

Layout. A *unit* is 64 words (512 bytes) of the row-major codes: 64, 32 or 16 rows of 1, 2 or 4 words.
:func:`transpose_units` loads a unit as 16 vectors of 32 bytes (vector ``p``, lane ``L`` = bytes
``32p + 16L .. 32p + 16L + 15``) and transposes every lane as a 16 x 16 byte matrix (four rounds of
unpacks), so that output vector ``j``, lane ``L``, byte ``p`` is unit byte ``32p + 16L + j``:

* 1 word per row: row ``4p + 2L + (j >= 8)``, byte ``j % 8`` of it (two accumulators: j < 8 and j >= 8);
* 2 words: row ``2p + L``, byte ``j``;
* 4 words: row ``p``, byte ``16L + j`` (the two lanes hold the two halves: added once at the end).

So the query byte that vector ``j`` lane ``L`` meets is byte ``(16L + j) % (8 * nw)`` of the query, and
:func:`query_tables` writes its two tables (low and high nibble) for every ``(j, L)``: 1 KiB per query.
:func:`sliced_min4` returns, for 4 queries, the smallest distance over the rows of a range of transposed
units (bytes of an int64; saturated at 255, which only makes a 256-bit ``d < threshold`` test err towards
"maybe": a flagged chunk is re-checked exactly).

Only where :data:`hashtool.hashindex._popcount.NIBBLE_LOOP` holds (AVX2, no AVX-512 VPOPCNTDQ); with
``NUMBA_DISABLE_JIT=1`` or elsewhere the scan never calls these (see ``_flat_kernels.sliced_pays``).
"""

from __future__ import annotations

import numba
import numpy as np

from hashtool.hashindex._popcount import NIBBLE_LOOP, popcount

UNIT_WORDS = 64
TABLE_BYTES = 1024  # per query: 16 vectors x (low, high) x 32 bytes


@numba.njit(cache=True, nogil=True)
def query_tables(q, qo, nw, tables, to):
    """Write the lookup tables of the query ``q[qo:qo + nw]`` to ``tables[to:to + TABLE_BYTES]``.

    ``tables[to + 64j + 32h + 16L + i] = popcount(i ^ nibble)``, nibble = the low (h = 0) or high (h = 1)
    half of query byte ``(16L + j) % (8 nw)``.
    """
    nbytes = 8 * nw
    for j in range(16):
        for lane in range(2):
            b = (16 * lane + j) % nbytes
            byte = (q[qo + b // 8] >> np.uint64(8 * (b % 8))) & np.uint64(255)
            lo = byte & np.uint64(15)
            hi = byte >> np.uint64(4)
            base = to + 64 * j + 16 * lane
            for i in range(16):
                tables[base + i] = popcount(np.uint64(i) ^ lo)
                tables[base + 32 + i] = popcount(np.uint64(i) ^ hi)


if NIBBLE_LOOP:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    V32, V16 = ir.VectorType(I8, 32), ir.VectorType(I16, 16)

    def _unpack_mask(size, high):
        """shufflevector mask of the lane-wise ``vpunpck{l,h}`` of ``size``-byte elements of two <32 x i8>."""
        mask = []
        per = 8 // size  # elements taken from each source per lane
        for lane in range(2):
            for e in range(per):
                first = 16 * lane + size * (e + (per if high else 0))
                mask += [first + b for b in range(size)]
                mask += [32 + first + b for b in range(size)]
        return ir.Constant(ir.VectorType(I32, 32), mask)

    _LO, _HI = _unpack_mask(1, False), _unpack_mask(1, True)

    def _vec_ptr(builder, data, byte_offset):
        """<32 x i8>* at ``byte_offset`` bytes past the array's data pointer."""
        p = builder.gep(builder.bitcast(data, I8.as_pointer()), [byte_offset])
        return builder.bitcast(p, V32.as_pointer())

    def _loop(builder, count, body):
        """``for i in range(count): body(i)`` (count > 0 not assumed)."""
        entry = builder.block
        loop = builder.append_basic_block("sl.loop")
        done = builder.append_basic_block("sl.done")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(I64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), entry)
        body(i)
        nxt = builder.add(i, ir.Constant(I64, 1))
        i.add_incoming(nxt, builder.block)
        builder.cbranch(builder.icmp_signed("<", nxt, count), loop, done)
        builder.position_at_end(done)

    def _transpose_codegen(context, builder, signature, args):
        words, woff, nunits, scratch = args
        src = context.make_array(signature.args[0])(context, builder, words).data
        dst = context.make_array(signature.args[3])(context, builder, scratch).data

        def body(u):
            base = builder.add(builder.mul(woff, ir.Constant(I64, 8)), builder.mul(u, ir.Constant(I64, 512)))
            v = [builder.load(_vec_ptr(builder, src, builder.add(base, ir.Constant(I64, 32 * p))), align=8) for p in range(16)]
            for _ in range(4):  # out[2i], out[2i+1] = unpack lo/hi (v[i], v[i+8]): four rounds transpose a lane
                out = []
                for i in range(8):
                    out.append(builder.shuffle_vector(v[i], v[i + 8], _LO))
                    out.append(builder.shuffle_vector(v[i], v[i + 8], _HI))
                v = out
            obase = builder.mul(u, ir.Constant(I64, 512))
            for j in range(16):
                builder.store(v[j], _vec_ptr(builder, dst, builder.add(obase, ir.Constant(I64, 32 * j))), align=8)

        _loop(builder, nunits, body)
        return context.get_dummy_value()

    def _byte_array(t):
        return isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"

    @intrinsic
    def transpose_units(typingctx, words, woff, nunits, scratch):
        """Transpose ``nunits`` units of ``words`` starting at word ``woff`` into ``scratch`` (see the module)."""
        if not (_byte_array(words) and words.dtype == types.uint64 and _byte_array(scratch) and scratch.dtype == types.uint64):
            return None
        return types.void(words, types.int64, types.int64, scratch), _transpose_codegen

    def _min4_codegen(nw):
        def codegen(context, builder, signature, args):
            scratch, uoff, nunits, tables, toff = args
            sdata = context.make_array(signature.args[0])(context, builder, scratch).data
            tdata = context.make_array(signature.args[3])(context, builder, tables).data
            mod = builder.module
            pshufb = cgutils.get_or_insert_function(mod, ir.FunctionType(V32, [V32, V32]), "llvm.x86.avx2.pshuf.b")
            umin = cgutils.get_or_insert_function(mod, ir.FunctionType(V32, [V32, V32]), "llvm.umin.v32i8")
            usat = cgutils.get_or_insert_function(mod, ir.FunctionType(V32, [V32, V32]), "llvm.uadd.sat.v32i8")
            rmin = cgutils.get_or_insert_function(mod, ir.FunctionType(I8, [V32]), "llvm.vector.reduce.umin.v32i8")
            m4 = ir.Constant(V32, [15] * 32)
            zero = ir.Constant(V32, [0] * 32)
            full = ir.Constant(V32, [255] * 32)
            swap = ir.Constant(ir.VectorType(I32, 32), list(range(16, 32)) + list(range(16)))
            entry = builder.block
            loop = builder.append_basic_block("min4.loop")
            done = builder.append_basic_block("min4.done")
            builder.cbranch(builder.icmp_signed(">", nunits, ir.Constant(I64, 0)), loop, done)
            builder.position_at_end(loop)
            u = builder.phi(I64)
            u.add_incoming(ir.Constant(I64, 0), entry)
            mins = [builder.phi(V32) for _ in range(4)]
            for m in mins:
                m.add_incoming(full, entry)
            ubase = builder.mul(builder.add(uoff, u), ir.Constant(I64, 512))
            # the tables' address, hidden from the optimiser in every iteration: it would otherwise hoist
            # all 128 table loads out of the loop and copy them to the stack on every call
            tptr = builder.asm(ir.FunctionType(tdata.type, [tdata.type]), "", "=r,0", [tdata], False)
            acc = [zero] * 4
            new = list(mins)
            for j in range(16):
                x = builder.load(_vec_ptr(builder, sdata, builder.add(ubase, ir.Constant(I64, 32 * j))), align=8)
                lo = builder.and_(x, m4)
                hi = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(x, V16), ir.Constant(V16, [4] * 16)), V32), m4)
                for s in range(4):
                    tb = builder.add(toff, ir.Constant(I64, s * 1024 + 64 * j))
                    tlo = builder.load(_vec_ptr(builder, tptr, tb), align=8)
                    thi = builder.load(_vec_ptr(builder, tptr, builder.add(tb, ir.Constant(I64, 32))), align=8)
                    c = builder.add(builder.call(pshufb, [tlo, lo]), builder.call(pshufb, [thi, hi]))
                    acc[s] = builder.add(acc[s], c)
                if nw == 1 and j in (7, 15):  # rows 4p + 2L, then rows 4p + 2L + 1
                    for s in range(4):
                        new[s] = builder.call(umin, [new[s], acc[s]])
                        acc[s] = zero
            if nw == 2:
                new = [builder.call(umin, [new[s], acc[s]]) for s in range(4)]
            elif nw == 4:  # lane 0 holds the first 16 bytes of each row, lane 1 the last 16
                new = [builder.call(umin, [new[s], builder.call(usat, [acc[s], builder.shuffle_vector(acc[s], acc[s], swap)])])
                       for s in range(4)]
            nxt = builder.add(u, ir.Constant(I64, 1))
            u.add_incoming(nxt, builder.block)
            for m, value in zip(mins, new):
                m.add_incoming(value, builder.block)
            loop_end = builder.block
            builder.cbranch(builder.icmp_signed("<", nxt, nunits), loop, done)
            builder.position_at_end(done)
            finals = []
            for value in new:  # every phi first, then the reductions
                phi = builder.phi(V32)
                phi.add_incoming(full, entry)
                phi.add_incoming(value, loop_end)
                finals.append(phi)
            out = ir.Constant(I64, 0)
            for s, phi in enumerate(finals):
                best = builder.zext(builder.call(rmin, [phi]), I64)
                out = builder.or_(out, builder.shl(best, ir.Constant(I64, 8 * s)))
            return out

        return codegen

    def _min4_intrinsic(nw):
        codegen = _min4_codegen(nw)

        def typer(typingctx, scratch, uoff, nunits, tables, toff):
            if not (_byte_array(scratch) and scratch.dtype == types.uint64 and _byte_array(tables) and tables.dtype == types.uint8):
                return None
            return types.int64(scratch, types.int64, types.int64, tables, types.int64), codegen

        typer.__name__ = f"sliced_min4_w{nw}"
        typer.__doc__ = f"Smallest distance of 4 queries over transposed units of {nw}-word rows (see the module)."
        return intrinsic(typer)

    sliced_min4_w1 = _min4_intrinsic(1)
    sliced_min4_w2 = _min4_intrinsic(2)
    sliced_min4_w4 = _min4_intrinsic(4)

else:  # never called (the scan takes the row-major loops); compiled stand-ins so that the kernels compile

    @numba.njit(cache=True, nogil=True)
    def transpose_units(words, woff, nunits, scratch):
        raise NotImplementedError("the byte-sliced scan needs AVX2")

    @numba.njit(cache=True, nogil=True)
    def sliced_min4_w1(scratch, uoff, nunits, tables, toff):
        raise NotImplementedError("the byte-sliced scan needs AVX2")

    sliced_min4_w2 = sliced_min4_w4 = sliced_min4_w1
