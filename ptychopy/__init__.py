"""ptychopy: the paper's Python API (whole mode and step mode) over the ``reconstruction`` package.

Listing 1 of the paper runs unchanged::

    import ptychopy
    ptychopy.epieinit(cmdstr)
    for i in range(its):
        ptychopy.epiestep()
    resobj = ptychopy.epieresobj()
    resprobe = ptychopy.epieresprobe()
    ptychopy.epiepost()
"""

from .api import (
    dm,
    dmcmdstr,
    dminit,
    dmnp,
    dmpost,
    dmresobj,
    dmresprobe,
    dmstep,
    epie,
    epiecmdstr,
    epieinit,
    epienp,
    epienpinit,
    epiepost,
    epieresobj,
    epieresprobe,
    epiestep,
    helloworld,
    lsqml,
    lsqmlcmdstr,
    lsqmlinit,
    lsqmlnp,
    lsqmlpost,
    lsqmlresobj,
    lsqmlresprobe,
    lsqmlstep,
    mls,
    mlscmdstr,
    mlsinit,
    mlsnp,
    mlspost,
    mlsresobj,
    mlsresprobe,
    mlsstep,
)

__all__ = [
    "dm", "dmcmdstr", "dminit", "dmnp", "dmpost", "dmresobj", "dmresprobe", "dmstep",
    "epie", "epiecmdstr", "epieinit", "epienp", "epienpinit", "epiepost", "epieresobj", "epieresprobe",
    "epiestep", "helloworld",
    "lsqml", "lsqmlcmdstr", "lsqmlinit", "lsqmlnp", "lsqmlpost", "lsqmlresobj", "lsqmlresprobe", "lsqmlstep",
    "mls", "mlscmdstr", "mlsinit", "mlsnp", "mlspost", "mlsresobj", "mlsresprobe", "mlsstep",
]
