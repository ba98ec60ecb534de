"""Frontends lower a trained model of one framework into ``compiler.ir.ModelIR``."""
