"""A userspace NFSv3 client served to the kernel through FUSE.

For hosts whose kernel has no NFS client (minimal cloud and container kernels): the local
volume driver starts ``python -m skiff.plugins.volumes.nfs mount ADDR:EXPORT TARGET`` instead
of ``mount -t nfs``. Layers, each its own module: ``xdr`` (RFC 4506 encoding), ``rpc`` (ONC RPC
over TCP with record marking and AUTH_SYS, RFC 5531), ``nfs3`` (the MOUNT3, portmapper and
NFSv3 procedures, RFC 1813), ``fuse`` (the FUSE kernel protocol over /dev/fuse) and
``fs`` (FUSE operations answered with NFS calls). ``helper`` is the process entry.
"""
