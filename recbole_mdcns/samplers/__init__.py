"""Negative samplers, registered by name: `sampler_class("DNS")`."""
from recbole_mdcns.samplers.base import NegativeSampler, SAMPLERS, register, sampler_class, sampler_names
from recbole_mdcns.samplers.divns import DivNSSampler
from recbole_mdcns.samplers.dns import DNSSampler
from recbole_mdcns.samplers.genni import GenNiSampler
from recbole_mdcns.samplers.mdcns import MDCNSSampler
from recbole_mdcns.samplers.popularity import PopularitySampler
from recbole_mdcns.samplers.uniform import UniformSampler

__all__ = [
    "NegativeSampler", "SAMPLERS", "register", "sampler_class", "sampler_names",
    "UniformSampler", "PopularitySampler", "DNSSampler", "GenNiSampler", "DivNSSampler", "MDCNSSampler",
]
