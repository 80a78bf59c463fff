"""The toolchain flow: synthesis and place-and-route through YoWASP, static timing over nextpnr's SDF, the pin
harness that wraps a component for synthesis, the component catalog, and formal equivalence checks of the ECP5
primitive mappings. Gateware lives in :mod:`rpaccel.rtl`; everything here runs tools on it."""
