"""CLI verbs for frames: ``generate nacl``, ``data summary``, ``data split``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from adascale.data.testbed import NaClSettings

TESTBED = NaClSettings()  # the one source of the generator's defaults (the options below show them)

generate_app = typer.Typer(help="Generate labelled frames with a reference force field.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect and split frame files (any format ASE reads).", no_args_is_help=True)

FORCES_KEY = typer.Option("REF_forces", "--forces-key", help="Per-atom force array (eV/Å); falls back to 'forces'.")
ENERGY_KEY = typer.Option("REF_energy", "--energy-key", help="Energy entry (eV); falls back to 'energy'.")


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(generate_app, name="generate")
    app.add_typer(data_app, name="data")


@generate_app.command("nacl")
def generate_nacl_command(
    out: Path = typer.Option(..., "--out", help="Extended XYZ file to write (REF_forces eV/Å, REF_energy eV, cell, pbc)."),
    frames: int = typer.Option(TESTBED.frames, "--frames", help="Frames in total (over all replicas)."),
    box_nm: float = typer.Option(
        TESTBED.box_nm,
        "--box-nm",
        help="Edge of the cubic box filled with water, nm (at least 1.93 with the default volume span).",
    ),
    molar: float = typer.Option(TESTBED.molar, "--molar", help="NaCl concentration, mol/L (sets the number of ion pairs)."),
    temperature: float = typer.Option(TESTBED.temperature, "--temperature", help="Temperature, K."),
    stride_ps: float = typer.Option(TESTBED.stride_ps, "--stride-ps", help="Time between frames, ps (2 fs steps)."),
    equil_ps: float = typer.Option(
        TESTBED.equil_ps, "--equil-ps", help="NPT equilibration per replica at 1 bar before sampling, ps."
    ),
    seed: int = typer.Option(TESTBED.seed, "--seed", help="Seed for ion placement, velocities, thermostat and barostat."),
    replicas: int = typer.Option(
        TESTBED.replicas, "--replicas", help="Independent trajectories run in parallel processes, concatenated in order."
    ),
    labels: str = typer.Option(
        TESTBED.labels,
        "--labels",
        help="spce: the dynamics' own SPC/E forces; amoeba: the same frames relabelled with amoeba2018.xml "
        "(multipole + vdW terms, mutual polarization, PME 0.9 nm).",
    ),
    volume_span: float = typer.Option(
        TESTBED.volume_span,
        "--volume-span",
        help="Sample volumes over the equilibrated one x (1 ± this); 0: one volume (the old sampling).",
    ),
    volume_levels: int = typer.Option(
        TESTBED.volume_levels, "--volume-levels", help="Volume levels evenly over that span (frames cycle through them)."
    ),
    level_equil_ps: float = typer.Option(
        TESTBED.level_equil_ps, "--level-equil-ps", help="NVT re-equilibration after scaling to each level, ps."
    ),
    threads: int = typer.Option(0, "--threads", help="CPU threads in all, shared by the replicas (0: every core)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache of generated testbeds (default: ~/.cache/adascale/testbeds)."
    ),
) -> None:
    """Simulate aqueous NaCl with OpenMM and write labelled frames.

    SPC/E water and Joung-Cheatham ions (amber14/spce.xml), PME with a 0.9 nm cutoff, rigid
    water, Langevin dynamics at 2 fs; NPT equilibration at 1 bar, then NVT sampling at
    --volume-levels volumes evenly over the equilibrated volume x (1 ± --volume-span) (default
    0.94-1.06, 7 levels; each level re-equilibrated --level-equil-ps after scaling the box, the
    frames cycling through the levels so any contiguous block spans the densities). Labels are
    OpenMM's forces (eV/Å), potential energy (eV) and stress REF_stress (eV/Å³, ASE's sign, by
    finite strain differences of the energy, the dispersion correction included and also
    stored alone as REF_stress_dispersion); the settings are stored in every frame (gen_* keys). Results are cached by their settings,
    so a repeat call is instant. The default box (2.0 nm, 1.0 M) holds 5 ion pairs and 246
    waters (748 atoms); the command prints its speed (frames/s) at the end.

    --labels amoeba samples exactly as above (SPC/E dynamics, rigid water; the SPC/E frames are
    cached and reused), then labels each frame with OpenMM's amoeba2018.xml: the forces and
    energy of AmoebaMultipoleForce + AmoebaVdwForce only (water is rigid, so bonded terms are
    left out), PME with the same 0.9 nm cutoff, mutual polarization to 1e-5; each molecule is
    made whole for the labelling and the frames keep wrapped positions. gen_label_* keys record
    the settings.

    Example: adascale generate nacl --frames 50 --seed 1 --out nacl.extxyz
    """
    from adascale.data.testbed import NaClSettings, cache_path, generate_nacl

    settings = NaClSettings(
        frames,
        box_nm,
        molar,
        temperature,
        stride_ps,
        equil_ps,
        seed,
        replicas,
        labels,
        volume_span,
        volume_levels,
        level_equil_ps,
    )
    cached = cache_path(settings, cache_dir).exists()
    start = time.perf_counter()
    generate_nacl(settings, out, cache_dir=cache_dir, threads=threads or None)
    elapsed = time.perf_counter() - start
    how = "copied from the cache" if cached else f"generated in {elapsed:.1f} s, {frames / elapsed:.2f} frames/s"
    typer.echo(f"wrote {out}: {frames} frames ({how})")


@data_app.command("summary")
def summary_command(
    file: Path = typer.Argument(..., help="Frames in any format ASE reads."),
    forces_key: str = FORCES_KEY,
    energy_key: str = ENERGY_KEY,
    ions: str = typer.Option("Na,Cl", "--ions", help="Ion species, comma-separated symbols."),
    close_contact_nm: float = typer.Option(
        0.6, "--close-contact-nm", help="An ion closer than this (nm) to another ion is in close contact."
    ),
) -> None:
    """Print frames, atoms, species, force statistics (kJ/mol/nm) and ion contacts.

    'mean |F_x|' is the mean absolute force component: the MAE of predicting zero force,
    the floor any model must beat. 'near an ion' counts atoms within the close-contact
    distance of an ion; 'ions in close contact' is the close_contact report subset.

    Example: adascale data summary nacl.extxyz
    """
    from rich.console import Console
    from rich.table import Table

    from adascale.data.frames import read_frames
    from adascale.data.summary import summarize_frames

    frames = read_frames(file, forces_key=forces_key, energy_key=energy_key, require_forces=False)
    s = summarize_frames(frames, _species(ions), close_contact_nm)
    console = Console(soft_wrap=True)
    low, high = s["atoms_per_frame"]
    console.print(f"[bold]{file}[/]: {s['frames']} frames, {low if low == high else f'{low}-{high}'} atoms per frame")
    table = Table("species", "atoms", "mean |F_x|", "RMS F_x", "max |F|", title="forces, kJ/mol/nm")
    for row in s["species"].values():
        figures = [f"{row[k]:.1f}" for k in ("mean_abs_component", "rms_component", "max_norm")] if s["labelled"] else ["-"] * 3
        table.add_row(row["symbol"], str(row["atoms"]), *figures)
    console.print(table)
    if s["labelled"]:
        console.print(f"all atoms: mean |F_x| {s['mean_abs_component_all']:.1f} kJ/mol/nm")
    if "energy_per_atom_ev" in s:
        console.print("energy per atom: {:.5f} ± {:.5f} eV".format(*s["energy_per_atom_ev"]))
    if "density_g_cm3" in s:
        console.print(f"density: {s['density_g_cm3']:.4f} g/cm³ (periodic frames)")
    cutoff = s["close_contact_nm"]
    console.print(f"atoms within {cutoff} nm of an ion: {s['fraction_atoms_near_ion']:.1%}")
    console.print(
        f"ions in close contact (another ion within {cutoff} nm): {s['fraction_ions_close_contact']:.1%} of {s['ions']}"
    )


@data_app.command("split")
def split_command(
    file: Path = typer.Argument(..., help="Frames in any format ASE reads."),
    sizes: str = typer.Option(..., "--sizes", help="Frames in train,valid,test, e.g. 400,50,150."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for train.extxyz, valid.extxyz, test.extxyz."),
    forces_key: str = FORCES_KEY,
    energy_key: str = ENERGY_KEY,
) -> None:
    """Split frames into contiguous train/valid/test blocks in file order.

    Consecutive frames of a trajectory are correlated, so contiguous blocks (not a shuffle)
    keep the test set honest. Frames beyond the three sizes are left out. Labels are written
    as REF_forces / REF_energy; other per-frame metadata is kept.

    Example: adascale data split nacl.extxyz --sizes 400,50,150 --out-dir split
    """
    from adascale.data.frames import read_frames, write_frames
    from adascale.data.split import split_frames
    from adascale.errors import AdaScaleError

    try:
        counts = [int(x) for x in sizes.split(",")]
    except ValueError:
        raise AdaScaleError(f"--sizes must be three integers like 400,50,150, got {sizes!r}") from None
    if len(counts) != 3:
        raise AdaScaleError(f"--sizes needs three numbers (train,valid,test), got {len(counts)}")
    if min(counts) < 1:
        raise AdaScaleError(f"--sizes: train, valid and test need at least one frame each, got {sizes}")
    frames = read_frames(file, forces_key=forces_key, energy_key=energy_key)
    blocks = split_frames(frames, counts)
    for name, block in zip(("train", "valid", "test"), blocks):
        write_frames(out_dir / f"{name}.extxyz", block)
    left = len(frames) - sum(counts)
    typer.echo(
        f"wrote {out_dir}: train {counts[0]}, valid {counts[1]}, test {counts[2]} frames"
        + (f" ({left} left out)" if left else "")
    )


def _species(symbols: str) -> tuple[int, ...]:
    from ase.data import atomic_numbers

    from adascale.errors import AdaScaleError

    try:
        return tuple(atomic_numbers[s.strip()] for s in symbols.split(",") if s.strip())
    except KeyError as exc:
        raise AdaScaleError(f"--ions: unknown chemical symbol {exc.args[0]!r}") from None
