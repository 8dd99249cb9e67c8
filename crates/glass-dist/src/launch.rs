//! Recognising a process started by an MPI launcher (`mpirun`, `srun`).

/// Environment variables through which launchers announce the world size, in the order
/// they are trusted: Open MPI's `mpirun`, PMI (MPICH, Intel MPI, Slurm's PMI plugins),
/// Slurm's `srun` step size, then the Slurm allocation's task count.
pub const WORLD_SIZE_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_NTASKS",
];

/// The world size a launcher announced, with the variable that said so, when it is
/// greater than one.
pub fn launched_world_size() -> Option<(usize, &'static str)> {
    launched_world_size_from(|k| std::env::var(k).ok())
}

/// [`launched_world_size`] over any environment (tests).
pub fn launched_world_size_from(
    get: impl Fn(&str) -> Option<String>,
) -> Option<(usize, &'static str)> {
    WORLD_SIZE_VARS.iter().find_map(|&k| {
        get(k)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&w| w > 1)
            .map(|w| (w, k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_variables_are_recognised() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(launched_world_size_from(env(&[])), None);
        assert_eq!(
            launched_world_size_from(env(&[("OMPI_COMM_WORLD_SIZE", "1")])),
            None
        );
        assert_eq!(
            launched_world_size_from(env(&[("OMPI_COMM_WORLD_SIZE", "4")])),
            Some((4, "OMPI_COMM_WORLD_SIZE"))
        );
        assert_eq!(
            launched_world_size_from(env(&[("SLURM_NTASKS", "16"), ("PMI_SIZE", "2")])),
            Some((2, "PMI_SIZE"))
        );
    }
}
