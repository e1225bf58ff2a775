"""Type stubs for ``vgic._core.blockhook`` (the reference: ``vgic.run._Cpu._on_block``)."""
from collections.abc import Callable
from typing import Any

class BlockHook:
    """The C translation-block hook of one vCPU of ``vgic.run``: counts the
    block and goes on, calling ``callback(addr, size)`` (the Python hook)
    only when the count reached ``check_at``, ``irq`` is set, or
    ``may_yield`` is set and the block holds YIELD/WFE in ``ram`` (guest
    RAM at guest-physical ``ram_base``)."""

    #: The first exception the Python hook raised, or None.
    error: BaseException | None
    insns: int
    check_at: int
    blk_start: int
    blk_end: int
    irq: bool
    #: PSTATE's mask bit of what is signalled (0x80 for an IRQ, 0x40 for a FIQ).
    irq_mask: int
    may_yield: bool
    #: Spin-wait blocks entered this slice.
    spins: int

    def __init__(self, callback: Callable[[int, int], Any], ram: Any, ram_base: int,
                 stop: Callable[[], Any] | None = None) -> None: ...
    @property
    def function(self) -> int:
        """The C function's address, a ``uc_cb_hookcode_t``."""
    @property
    def user_data(self) -> int:
        """The user_data address for uc_hook_add (keep this object alive)."""
    def read_pstate_with_unicorn(self) -> None:
        """Let the C hook read PSTATE through the installed Unicorn's
        ``uc_reg_read`` (ImportError without unicorn)."""
    def holds_hint(self, addr: int, size: int) -> bool:
        """Whether the block at ``addr`` of ``size`` bytes holds YIELD or WFE."""

class SysHook:
    """A UC_HOOK_INSN hook for MRS (``read``) or MSR calling
    ``callback(rt, (op0, op1, crn, crm, op2), value, read)``."""

    error: BaseException | None

    def __init__(self, callback: Callable[[int, tuple[int, int, int, int, int], int, bool], bool],
                 read: bool, stop: Callable[[], Any] | None = None) -> None: ...
    @property
    def function(self) -> int:
        """The C function's address, a ``uc_cb_insn_sys_t``."""
    @property
    def user_data(self) -> int:
        """The user_data address for uc_hook_add (keep this object alive)."""
