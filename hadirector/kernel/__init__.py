"""Every call into the kernel, each beside its fake (httpcore's ``_backends/`` shape).

``rtnl``       one blocking rtnetlink request: add or remove an address (the VIPs, both
               ways), and the pure halves of the address dump
``addresses``  AddressManager (VIP add/remove over ``rtnl``, address and link reads)
               and LinkWatcher (RTM_NEWLINK broadcasts for track_interface)
``ipvs``       the kernel's IPVS over generic netlink (the only pyroute2 user)
``sysctl``     the connection-sync tuning, ``net.ipv4.vs.*``
``fake``       FakeIpvs, FakeAddresses, FakeLinkWatcher: keep state, refuse like the kernel

Nothing here is imported by this ``__init__``: the start-up release of a dead
predecessor's VIPs imports ``rtnl`` first thing, and a VRRP-only agent never pays for
pyroute2 (tests/unit/test_startup_imports.py).
"""
