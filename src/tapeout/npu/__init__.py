"""The virtual NPU: ISA (isa), compiler from the IR (compiler), simulator (sim), API (api)."""
