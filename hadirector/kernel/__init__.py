"""Every call into the kernel, each beside its fake (httpcore's ``_backends/`` shape).
Only this folder imports pyroute2 or opens netlink, raw IP or packet sockets
(tests/unit/test_layering.py).

``nlmsg``        the netlink framing they all share: header, attributes, acks, dump ends
``rtnl``         one blocking rtnetlink request: add or remove an address (the VIPs, both
                 ways), and the pure halves of the address dump
``addresses``    AddressManager (VIP add/remove over ``rtnl``, address and link reads)
                 and LinkWatcher (RTM_NEWLINK broadcasts for track_interface)
``gate_routes``  the scale-out announce gate's routes, over ``rtnl``
``ipvs``         the kernel's IPVS over generic netlink (the only pyroute2 user)
``reconcile``    level-triggered IPVS sync: read the kernel, plan, apply the difference
``ownership``    the reconciler's owned services, persisted for the next agent
``sysctl``       the connection-sync tuning, ``net.ipv4.vs.*``
``vrrp_socket``  raw VRRP sockets (IP protocol 112), IPv4 and IPv6
``garp``         gratuitous ARP / unsolicited NA frames and their packet socket
``icmp``         the ping probe's ICMP echo socket and packets
``spawn``        every script's child process: spawned off the loop, its whole tree
                 killed at timeout or cancel (pidfd, setsid, child subreaper)
``fake``         FakeIpvs, FakeAddresses, FakeLinkWatcher: keep state, refuse like the kernel

Nothing here is imported by this ``__init__``: the start-up release of a dead
predecessor's VIPs imports ``rtnl`` first thing, and a VRRP-only agent never pays for
pyroute2 (tests/unit/test_startup_imports.py).
"""
