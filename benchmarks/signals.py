"""A third atypical target: log-magnitude spectrograms of procedural sounds, far from natural images and from shapes.

Ten classes of half-second signals (tones, chirps, modulations, clicks, noise bands...) with random parameters,
buried in white noise, turned into a spectrogram by scipy's short-time Fourier transform, resized to the model's input
and scaled to `[-1, 1]`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import stft

SIGNAL_NAMES = [
    "tone",
    "chirp_up",
    "chirp_down",
    "am_tone",
    "fm_tone",
    "harmonics",
    "two_tones",
    "clicks",
    "noise_band",
    "pulsed_tone",
]
SAMPLE_RATE = 8000
DURATION = 0.5


def _signal(label: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One clean signal of class `label` sampled at times `t` (seconds)."""
    f0 = rng.uniform(300.0, 2500.0)
    if label == 0:
        return np.sin(2 * np.pi * f0 * t)
    if label in (1, 2):
        low, high = sorted(rng.uniform(200.0, 3500.0, size=2))
        start, end = (low, high) if label == 1 else (high, low)
        return np.sin(2 * np.pi * (start * t + (end - start) * t**2 / (2 * DURATION)))
    if label == 3:
        return (1 + np.sin(2 * np.pi * rng.uniform(4.0, 16.0) * t)) * np.sin(2 * np.pi * f0 * t) / 2
    if label == 4:
        depth, rate = rng.uniform(100.0, 400.0), rng.uniform(3.0, 10.0)
        return np.sin(2 * np.pi * f0 * t + depth / rate * np.sin(2 * np.pi * rate * t))
    if label == 5:
        base = rng.uniform(200.0, 700.0)
        return sum(np.sin(2 * np.pi * base * k * t) / k for k in range(1, 6))
    if label == 6:
        return np.sin(2 * np.pi * f0 * t) + np.sin(2 * np.pi * rng.uniform(300.0, 3500.0) * t)
    if label == 7:
        clicks = np.zeros_like(t)
        clicks[rng.choice(len(t), size=int(rng.integers(4, 12)), replace=False)] = 8.0
        return clicks
    if label == 8:
        noise = np.fft.rfft(rng.normal(size=len(t)))
        freqs = np.fft.rfftfreq(len(t), 1 / SAMPLE_RATE)
        low = rng.uniform(300.0, 2500.0)
        noise[(freqs < low) | (freqs > low + rng.uniform(300.0, 1000.0))] = 0
        band = np.fft.irfft(noise, n=len(t))
        return band / (np.abs(band).max() + 1e-8)
    gate = (np.sin(2 * np.pi * rng.uniform(3.0, 8.0) * t) > 0).astype(float)
    return gate * np.sin(2 * np.pi * f0 * t)


def generate_spectrograms(
    n: int, image_size: int = 32, seed: int = 0, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` spectrograms (10 classes, see [`SIGNAL_NAMES`]) of signals in white noise of std `noise`.

    Returns:
        `(images, labels)`: float32 `(n, 3, image_size, image_size)` in `[-1, 1]` (the same image in each channel;
        frequency on the vertical axis, time on the horizontal one) and int64 `(n,)`.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * DURATION)) / SAMPLE_RATE
    labels = np.arange(n) % len(SIGNAL_NAMES)
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        wave = _signal(int(label), t, rng) + rng.normal(0.0, noise, size=len(t))
        _, _, spectrum = stft(wave, fs=SAMPLE_RATE, nperseg=128)
        power = np.log1p(np.abs(spectrum)).astype(np.float32)
        resized = F.interpolate(torch.from_numpy(power)[None, None], size=(image_size, image_size), mode="bilinear")
        image = resized[0, 0].flip(0).numpy()
        low, high = image.min(), image.max()
        images[i] = (2 * (image - low) / (high - low + 1e-8) - 1)[None]
    return images, labels.astype(np.int64)
