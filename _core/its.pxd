# The emulated ITS's C state (its.pyx): the register file in the state
# buffer, and the translation tables KVM keeps in its own memory - devices,
# their ITEs, collections - as allocated arrays.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from vgic._core.cstate cimport CState
from vgic._core.gicstate cimport GicState


cdef struct ItsRegs:
    uint64_t cbaser
    uint64_t cwriter
    uint64_t creadr
    uint64_t baser[2]           # GITS_BASER0 (device table), GITS_BASER1 (collection table)
    uint32_t enabled            # GITS_CTLR.Enabled
    uint32_t abi_rev            # GITS_IIDR.Revision: the save/restore ABI

cdef struct Ite:
    uint32_t event
    uint32_t lpi                # pINTID
    uint16_t icid
    uint8_t has_coll            # KVM's ite->collection != NULL (MAPC V=0 clears it)
    uint8_t pad

cdef struct Dev:
    uint64_t itt_addr
    uint32_t nbits              # EventID bits (MAPD Size + 1)
    uint32_t n                  # ITEs, in EventID order
    uint32_t cap
    Ite *ites

cdef struct ItsState:
    ItsRegs *r
    GicState *g                 # the VM's distributor: LPIs, guest memory, vCPUs
    Dev **dev                   # 65536 DeviceIDs (NULL: not mapped)
    uint64_t *dev_bits          # 1024 words: the DeviceIDs mapped
    uint32_t ndev
    uint32_t *coll_target       # 65536 ICIDs: vCPU id, or COLLECTION_NOT_MAPPED
    uint64_t *coll_bits         # 1024 words: the ICIDs that exist
    uint16_t *coll_order        # the ICIDs in creation order (KVM's collection_list)
    uint32_t ncoll
    uint64_t nites
    uint64_t max_ites           # the model's allocation limit (-ENOMEM beyond)


cdef class Its(CState):
    cdef ItsState s
    cdef object _gic, _regs
    cdef int _ready(self) except -1
