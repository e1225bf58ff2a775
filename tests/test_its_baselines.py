"""The baselines the ITS save/restore benchmark measures beside SAVE_TABLES
and RESTORE_TABLES (issue #8): the plain C loop that writes and reads back
the same table bytes, and the stripped ITE save/restore pair - the floor
any table save and restore must pay.  A baseline that computed something
else would make the benchmark's ratios meaningless, so each is checked
against what the model's own SAVE_TABLES wrote and restored, on both
backends, and its argument checks are checked like any kernel's."""
import numpy as np
import pytest

from vgic import _backend, regmap
from vgic.bench import ItsWorkload

BACKENDS = ["core", "pure"]


def its_module(backend):
    if backend == "core":
        pytest.importorskip("vgic._core.its")
    return _backend.modules(backend)[1].its


@pytest.fixture(scope="module")
def workload():
    """A VM whose ITS maps 3,000 ITEs over 3 devices (LPI 8192 + k for the
    k-th, collection k mod 4), its tables saved by SAVE_TABLES."""
    return ItsWorkload(None, 3_000)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_table_loop_reads_back_what_it_wrote(backend, workload):
    its = its_module(backend)
    mem = workload.vm.memory.copy()
    offsets, values = workload.table_image()
    expect = int(np.bitwise_xor.reduce(values))
    mem[:] = 0
    assert its.plain_table_loop(mem, offsets, values) == expect
    # Each value landed little-endian at its offset.
    k = len(offsets) // 2
    assert int.from_bytes(mem[int(offsets[k]):int(offsets[k]) + 8].tobytes(), "little") == int(values[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripped_restore_decodes_what_save_tables_wrote(backend, workload):
    # The floor restores the same (pINTID, ICID) per ITE as the model holds,
    # makes each distinct LPI once, and reads each priority from its
    # property byte (0xA3 in this workload: priority 0xA0 = 0xA3 & 0xFC, the
    # LPI configuration byte's bits [7:2], GICv3 spec 5.1.1).
    its = its_module(backend)
    args = workload.stripped_inputs()
    model = [(d["ites"]["pINTID"], d["ites"]["ICID"]) for d in workload.vm.its.state()["devices"]]
    want = np.stack([np.concatenate([p for p, _ in model]), np.concatenate([i for _, i in model])], axis=1)
    assert np.array_equal(args["ites"], want.astype(np.uint32))
    out = {**args, "ites": np.zeros_like(args["ites"])}
    made = its.stripped_table_restore(**out)
    assert made == 3_000                             # 3,000 distinct LPIs: 8192 .. 11191
    assert np.array_equal(out["ites"], args["ites"])
    k = args["ites"][:, 0].astype(np.int64) - regmap.LPI_BASE
    assert np.all((out["lpi_bitmap"][k >> 5] >> (k & 31)) & 1)
    assert int(np.unpackbits(out["lpi_bitmap"].view(np.uint8)).sum()) == 3_000
    assert np.all(out["lpi_priority"][k] == 0xA0)
    assert np.array_equal(out["lpi_target"][k], args["ites"][:, 1].astype(np.int32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripped_save_writes_kvm_ite_layout(backend, workload):
    # arm-vgic-its.rst, ITT entry: bits [63:48] next, [47:16] pINTID,
    # [15:0] ICID; the floor writes next = 1.
    its = its_module(backend)
    args = workload.stripped_inputs()
    mem = np.zeros_like(args["memory"])
    its.stripped_table_save(**{**args, "memory": mem})
    off = args["offsets"]
    words = np.array([int.from_bytes(mem[int(o):int(o) + 8].tobytes(), "little") for o in off[:50]], dtype=np.uint64)
    lpi, icid = args["ites"][:50, 0].astype(np.uint64), args["ites"][:50, 1].astype(np.uint64)
    assert np.array_equal(words, (np.uint64(1) << np.uint64(48)) | (lpi << np.uint64(16)) | icid)


def test_stripped_pair_core_equals_twin(workload):
    pytest.importorskip("vgic._core.its")
    results = []
    for backend in BACKENDS:
        args = workload.stripped_inputs()
        mem = args["memory"].copy()
        rng = np.random.default_rng(8)
        # Some pINTIDs repeated (an LPI two ITEs map is made once).
        ites = args["ites"].copy()
        ites[::7, 0] = ites[0, 0]
        ites[:, 1] = rng.integers(0, 1 << 16, size=len(ites), dtype=np.uint32)
        its_module(backend).stripped_table_save(**{**args, "memory": mem, "ites": ites})
        out = {**args, "memory": mem, "ites": np.zeros_like(ites)}
        made = its_module(backend).stripped_table_restore(**out)
        results.append((made, mem.tobytes(), out["ites"].tobytes(), out["lpi_bitmap"].tobytes(),
                        out["lpi_target"].tobytes(), out["lpi_priority"].tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["offset_past_end", "negative_offset", "ites_shape", "ites_dtype", "readonly_ites",
                                  "lpi_lengths", "prop_past_end", "prop_bool"])
def test_stripped_pair_refuses_bad_arguments(backend, case, workload):
    # Bad input never reaches the C loop: every index is checked first.
    its = its_module(backend)
    args = workload.stripped_inputs()
    n = len(args["memory"])
    if case == "offset_past_end":
        args["offsets"] = args["offsets"].copy()
        args["offsets"][-1] = n - 7
    elif case == "negative_offset":
        args["offsets"] = args["offsets"].astype(np.int64)
        args["offsets"][0] = -8
    elif case == "ites_shape":
        args["ites"] = args["ites"][:-1].copy()
    elif case == "ites_dtype":
        args["ites"] = args["ites"].astype(np.int64)
    elif case == "readonly_ites":
        args["ites"].setflags(write=False)
    elif case == "lpi_lengths":
        args["lpi_target"] = np.zeros(10, dtype=np.int32)
    elif case == "prop_past_end":
        args["prop_offset"] = n - 100
    else:
        args["prop_offset"] = True
    err = TypeError if case in ("ites_dtype", "readonly_ites") else ValueError
    for fn in (its.stripped_table_save, its.stripped_table_restore):
        with pytest.raises(err):
            fn(**args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripped_restore_names_an_entry_that_is_no_lpi(backend, workload):
    # A pINTID outside the arrays (here 0: an invalid ITE) stops the loop
    # with ValueError naming the entry; the entries before it are restored.
    its = its_module(backend)
    args = workload.stripped_inputs()
    mem = args["memory"].copy()
    o = int(args["offsets"][5])
    mem[o:o + 8] = 0
    out = {**args, "memory": mem, "ites": np.zeros_like(args["ites"])}
    with pytest.raises(ValueError, match="entry 5: pINTID 0"):
        its.stripped_table_restore(**out)
    assert np.array_equal(out["ites"][:5], args["ites"][:5])
