"""Models of the chip (:mod:`rpaccel.rtl.accel`) that execute its command stream without simulating gateware."""
