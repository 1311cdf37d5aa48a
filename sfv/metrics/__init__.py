"""Video metrics for sfv: FVD (user-supplied I3D TorchScript), PSNR / SSIM (torchmetrics), LPIPS (optional extra).

    frechet.py   Gaussian statistics and the Fréchet distance (torchmetrics' closed form, float64)
    fvd.py       the I3D protocol: clip → [N, 3, T, 224, 224] in [-1, 1] → features; cached reference statistics
    pairs.py     per-pair PSNR / SSIM / LPIPS for videos matched by file name
    videos.py    video folders: listing, loading, one-line errors
    evaluate.py  `sfv eval`: validate everything, compute, write one JSON
"""
