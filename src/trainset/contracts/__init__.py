"""Declarative contracts for named arrays, validated into a report of every failure."""

from trainset.contracts.report import Failure, Report
from trainset.contracts.rules import Finite, MaxValue, MinValue, Predicate, Rule
from trainset.contracts.spec import ArraySpec, Contract, MappingSource, NpzSource

__all__ = [
    "ArraySpec",
    "Contract",
    "Failure",
    "Finite",
    "MappingSource",
    "MaxValue",
    "MinValue",
    "NpzSource",
    "Predicate",
    "Report",
    "Rule",
]
