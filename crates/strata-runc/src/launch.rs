//! Starting a job: its image's layers unpacked, an overlay root, a runtime spec, and
//! `runc run` under a supervisor.

use std::path::{Path, PathBuf};

use crate::bundle::{self, BundleSpec, PastaHook};
use crate::idmap;
use crate::image;
use crate::overlay;
use crate::procfs::proc_start_time;
use crate::supervisor;
use crate::{validate_job_id, JobRecord, LaunchError, LaunchRequest, LocalLauncher, Running};

/// pasta's pid, in the job directory, for cleanup to stop it.
pub(crate) const PASTA_PID: &str = "pasta.pid";

impl LocalLauncher {
    /// Starts the job detached and returns once its process runs (or failed to start).
    pub fn launch(&self, req: &LaunchRequest) -> Result<Running, LaunchError> {
        let job = req.job_id.as_str();
        validate_job_id(job)?;
        let dir = self.job_dir(job);
        let cid = Self::container_id(job);
        if dir.exists() || self.runc_state(job, &cid)?.is_some() {
            return Err(LaunchError::AlreadyExists(job.to_string()));
        }
        if req.network && self.pasta.is_none() {
            return Err(LaunchError::NoPasta { job: job.into() });
        }
        let image =
            image::load_image(&self.store, &req.image).map_err(|source| LaunchError::Image {
                job: job.into(),
                source,
            })?;
        let mut layer_dirs = Vec::with_capacity(image.layers.len());
        let mut extracted = 0;
        for digest in &image.layers {
            let layer = self
                .layers
                .ensure_for(&self.store, &req.image, digest)
                .map_err(|source| LaunchError::Rootfs {
                    job: job.into(),
                    source,
                })?;
            extracted += usize::from(layer.extracted);
            idmap::shift_layer(&layer.dir, self.ids).map_err(|source| LaunchError::IdMap {
                job: job.into(),
                source,
            })?;
            layer_dirs.push(layer.dir);
        }
        std::fs::create_dir(&dir)
            .and_then(|()| crate::private_dir(&dir, 0o700, None))
            .map_err(|source| LaunchError::Io {
                job: job.into(),
                path: dir.clone(),
                source,
            })?;
        let started = self.prepare_and_start(req, &image, &layer_dirs, extracted);
        if started.is_err() {
            // Leave nothing behind: unmount and remove what this launch created.
            let _ = self.cleanup(job);
        }
        started
    }

    fn prepare_and_start(
        &self,
        req: &LaunchRequest,
        image: &image::ImageInfo,
        layer_dirs: &[PathBuf],
        layers_extracted: usize,
    ) -> Result<Running, LaunchError> {
        let job = req.job_id.as_str();
        let dir = self.job_dir(job);
        let cid = Self::container_id(job);
        let dirs = self.overlay_dirs(job);
        // The job's root owns its writable layer and its mount point, as it owns the
        // shifted lower layers: root in the job is root of its files, nobody on the host.
        for own in [&dirs.upper, &dirs.work, &dirs.target] {
            // The mount point may be left from a launch cut short (it is outside the job
            // directory): reuse it, it is empty and not mounted (launch checked).
            std::fs::create_dir(own)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists if *own == dirs.target => Ok(()),
                    _ => Err(e),
                })
                .map_err(|source| idmap::IdMapError::Io {
                    path: own.to_path_buf(),
                    source,
                })
                .and_then(|()| idmap::own_dir(own, self.ids))
                .map_err(|source| LaunchError::IdMap {
                    job: job.into(),
                    source,
                })?;
        }
        overlay::mount_overlay(&dirs, layer_dirs).map_err(|source| LaunchError::Overlay {
            job: job.into(),
            source,
        })?;
        let user =
            image::resolve_user(image.config.user.as_deref(), &dirs.target).map_err(|source| {
                LaunchError::User {
                    job: job.into(),
                    source,
                }
            })?;
        let args = if req.command.is_empty() {
            let mut a = image.config.entrypoint.clone().unwrap_or_default();
            a.extend(image.config.cmd.clone().unwrap_or_default());
            a
        } else {
            req.command.clone()
        };
        if args.is_empty() {
            return Err(LaunchError::NoCommand { job: job.into() });
        }
        let cwd = req
            .cwd
            .clone()
            .or_else(|| image.config.working_dir.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "/".to_string());
        self.record_outputs(req, &cwd)?;
        let (devices, missing_gpus) = bundle::probe_gpu_devices(&self.dev_dir, &req.gpus);
        if !missing_gpus.is_empty() {
            tracing::warn!(job, ?missing_gpus, "GPUs asked for are not on this machine");
        }
        let gpus: Vec<u32> = req
            .gpus
            .iter()
            .copied()
            .filter(|g| !missing_gpus.contains(g))
            .collect();
        let spec = bundle::runtime_spec(&BundleSpec {
            rootfs: dirs.target.clone(),
            args,
            env: merge_env(
                image.config.env.as_deref().unwrap_or(&[]),
                &user.home,
                &req.env,
            ),
            cwd,
            uid: user.uid,
            gid: user.gid,
            hostname: cid.clone(),
            cgroups_path: format!("/strata/{cid}"),
            limits: req.limits,
            devices,
            network: req.network,
            pasta: self.pasta.as_ref().map(|program| PastaHook {
                program: program.clone(),
                pid_file: dir.join(PASTA_PID),
                log: dir.join("pasta.log"),
            }),
            ids: self.ids,
            swap_accounting: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists(),
            open_files: bundle::open_files_limit(),
        })
        .map_err(|source| LaunchError::Bundle {
            job: job.into(),
            source,
        })?;
        let config = dir.join("config.json");
        spec.save(&config).map_err(|e| LaunchError::Io {
            job: job.into(),
            path: config.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let files = self.files(job, &req.log_path);
        let started =
            supervisor::spawn_supervised(&self.runc, &dir, &cid, &files).map_err(|source| {
                LaunchError::Runc {
                    job: job.into(),
                    source,
                }
            })?;
        if started.runc_status != 0 || started.container_pid <= 0 {
            supervisor::reap(started.supervisor);
            let message = crate::runc::last_runc_error(&files.runc_log)
                .unwrap_or_else(|| format!("runc exited with wait status {}", started.runc_status));
            return Err(LaunchError::StartFailed {
                job: job.into(),
                message,
            });
        }
        let record = JobRecord {
            job_id: job.into(),
            supervisor: started.supervisor,
            pid: started.container_pid,
            start_time: proc_start_time(started.container_pid).unwrap_or(0),
            log_path: req.log_path.clone(),
        };
        let record_path = dir.join("job.json");
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        std::fs::write(&record_path, bytes).map_err(|source| LaunchError::Io {
            job: job.into(),
            path: record_path,
            source,
        })?;
        Ok(Running {
            job_id: job.into(),
            container_id: cid,
            pid: started.container_pid,
            log_path: req.log_path.clone(),
            gpus,
            missing_gpus,
            layers_extracted,
        })
    }
}

impl LocalLauncher {
    /// Writes the job's outputs, made absolute against its working directory, into the job
    /// directory before the job starts: whoever collects them after its end (this agent or
    /// a restarted one) finds them there.
    fn record_outputs(&self, req: &LaunchRequest, cwd: &str) -> Result<(), LaunchError> {
        let job = req.job_id.as_str();
        let resolved =
            crate::outputs::resolve(&req.outputs, cwd).map_err(|source| LaunchError::Outputs {
                job: job.into(),
                source,
            })?;
        let path = self.job_dir(job).join(crate::outputs::OUTPUTS_FILE);
        let bytes = serde_json::to_vec(&resolved).unwrap_or_default();
        std::fs::write(&path, bytes).map_err(|source| LaunchError::Io {
            job: job.into(),
            path,
            source,
        })
    }
}

/// Image Env, then HOME if the image does not set it, then the job's variables, a later
/// value replacing an earlier one of the same name.
fn merge_env(image: &[String], home: &str, job: &[(String, String)]) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    for kv in image {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    if !image.iter().any(|kv| kv.starts_with("HOME=")) {
        set("HOME", home);
    }
    for (k, v) in job {
        set(k, v);
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_env_overrides_image_env_and_home_defaults() {
        let env = merge_env(
            &["PATH=/usr/bin".into(), "LANG=C".into()],
            "/root",
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("LR".into(), "0.1".into()),
            ],
        );
        assert_eq!(
            env,
            ["PATH=/usr/bin", "LANG=C.UTF-8", "HOME=/root", "LR=0.1"]
        );
    }
}
