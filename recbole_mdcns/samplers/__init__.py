"""Negative samplers, registered by name: `sampler_class("DNS")`.

Imported in the order of the README's key table (registration order)."""
from recbole_mdcns.samplers.base import (
    SAMPLERS, CoTrained, NegativeSampler, register, sampler_class, sampler_names,
)
from recbole_mdcns.samplers.uniform import UniformSampler  # isort: skip
from recbole_mdcns.samplers.popularity import PopularitySampler  # isort: skip
from recbole_mdcns.samplers.dns import DNSSampler  # isort: skip
from recbole_mdcns.samplers.genni import GenNiSampler  # isort: skip
from recbole_mdcns.samplers.divns import DivNSSampler  # isort: skip
from recbole_mdcns.samplers.mdcns import MDCNSSampler  # isort: skip
from recbole_mdcns.samplers.mixgcf import MixGCFSampler  # isort: skip
from recbole_mdcns.samplers.ahns import AHNSSampler  # isort: skip
from recbole_mdcns.samplers.srns import SRNSSampler  # isort: skip
from recbole_mdcns.samplers.adasir import AdaSIRSampler  # isort: skip
from recbole_mdcns.samplers.gnno import GNNOSampler  # isort: skip

__all__ = [
    "NegativeSampler", "CoTrained", "SAMPLERS", "register", "sampler_class", "sampler_names",
    "UniformSampler", "PopularitySampler", "DNSSampler", "GenNiSampler", "DivNSSampler", "MDCNSSampler",
    "MixGCFSampler", "AHNSSampler", "SRNSSampler", "AdaSIRSampler", "GNNOSampler",
]
