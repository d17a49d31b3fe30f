"""Curve fits: the job kernel's ``fit`` kind, :mod:`service.jobs.fit` (this module keeps
the older import path)."""

from __future__ import annotations

from service.jobs.fit import (
    ACTIVE_FITS_KEY,
    FIT,
    FIT_TERMINAL,
    FITS_KEY,
    FitConflict,
    FitKeys,
    FitNotFound,
    FitState,
    beat_fit,
    cancel_fit,
    create_fit,
    fit_detail,
    list_fits,
    prune_expired_fits,
    reap_fits,
    seed_active_fits,
)

__all__ = ["ACTIVE_FITS_KEY", "FIT", "FITS_KEY", "FIT_TERMINAL", "FitConflict", "FitKeys", "FitNotFound",
           "FitState", "beat_fit", "cancel_fit", "create_fit", "fit_detail", "list_fits", "prune_expired_fits",
           "reap_fits", "seed_active_fits"]
