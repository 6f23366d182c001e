# -*- coding: utf-8 -*-
"""Fault-injection tests (marker ``faults``) and the tools they are built with."""
