//! GPUs: which ones llama.cpp's loaded backends offer, how models use them,
//! and the check that a GPU-configured worker never falls back to the CPU
//! silently.

use serde::Deserialize;

/// How the worker uses GPUs (`[gpu]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuSettings {
    pub mode: GpuMode,
    /// Indices (as in `Status`' `gpus`) of the GPUs to use; empty: all.
    pub devices: Vec<usize>,
    /// Flash attention: `auto` (llama.cpp decides per model and device),
    /// `on` or `off`.
    pub flash_attention: FlashAttention,
}

impl Default for GpuSettings {
    fn default() -> Self {
        Self {
            mode: GpuMode::Auto,
            devices: Vec::new(),
            flash_attention: FlashAttention::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Offload to GPUs when a GPU backend is loaded, else run on the CPU
    /// (and say so in the log and in `Status`).
    Auto,
    /// Refuse to start without a GPU backend and at least one GPU.
    Required,
    /// CPU only, even if GPUs are present.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    Auto,
    On,
    Off,
}

impl FlashAttention {
    /// llama.cpp's `llama_flash_attn_type`.
    pub fn llama_value(self) -> i32 {
        match self {
            Self::Auto => -1,
            Self::Off => 0,
            Self::On => 1,
        }
    }
}

/// One GPU as llama.cpp's backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// The backend device index (what `devices` selects by).
    pub index: usize,
    /// e.g. `CUDA0`.
    pub name: String,
    /// e.g. `NVIDIA H100 80GB HBM3`.
    pub description: String,
    /// e.g. `CUDA`.
    pub backend: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
}

/// The GPUs of the loaded ggml backends (none in a CPU build).
pub fn devices() -> Vec<GpuDevice> {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|d| matches!(d.device_type, Kind::Gpu | Kind::IntegratedGpu))
        .map(|d| GpuDevice {
            index: d.index,
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total_bytes: d.memory_total as u64,
            memory_free_bytes: d.memory_free as u64,
        })
        .collect()
}

/// What a model load should do with GPUs, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPlan {
    /// Offload layers at all.
    pub offload: bool,
    /// Backend device indices to use; empty: llama.cpp's default (all).
    pub devices: Vec<usize>,
    pub flash_attention: FlashAttention,
}

/// Why the worker refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error(
        "the worker is configured to require a GPU (`gpu.mode = \"required\"`), but no GPU backend is loaded or it found no GPU (devices: {found}); a CPU build needs scripts/build-cuda or `--features cuda`"
    )]
    NoGpu { found: String },
    #[error("`gpu.devices` names device {index}, but the GPUs are: {found}")]
    UnknownDevice { index: usize, found: String },
}

/// Checks `settings` against the GPUs present.
pub fn plan(settings: &GpuSettings, gpus: &[GpuDevice]) -> Result<GpuPlan, GpuError> {
    let found = || {
        if gpus.is_empty() {
            "CPU only".to_owned()
        } else {
            gpus.iter()
                .map(|g| format!("{} {} ({})", g.index, g.name, g.description))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if settings.mode == GpuMode::Required && gpus.is_empty() {
        return Err(GpuError::NoGpu { found: found() });
    }
    for &index in &settings.devices {
        if !gpus.iter().any(|g| g.index == index) {
            return Err(GpuError::UnknownDevice {
                index,
                found: found(),
            });
        }
    }
    let offload = settings.mode != GpuMode::Off && !gpus.is_empty();
    Ok(GpuPlan {
        offload,
        devices: if offload {
            settings.devices.clone()
        } else {
            Vec::new()
        },
        flash_attention: settings.flash_attention,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100(index: usize) -> GpuDevice {
        GpuDevice {
            index,
            name: format!("CUDA{index}"),
            description: "NVIDIA H100 80GB HBM3".into(),
            backend: "CUDA".into(),
            memory_total_bytes: 80 << 30,
            memory_free_bytes: 79 << 30,
        }
    }

    #[test]
    fn required_without_a_gpu_refuses_to_start() {
        let settings = GpuSettings {
            mode: GpuMode::Required,
            ..GpuSettings::default()
        };
        let err = plan(&settings, &[]).unwrap_err();
        assert!(matches!(err, GpuError::NoGpu { .. }));
        assert!(err.to_string().contains("CPU only"));
        assert!(plan(&settings, &[h100(1)]).unwrap().offload);
    }

    #[test]
    fn auto_offloads_only_when_a_gpu_is_there_and_off_never() {
        let auto = GpuSettings::default();
        assert!(!plan(&auto, &[]).unwrap().offload);
        assert!(plan(&auto, &[h100(1)]).unwrap().offload);
        let off = GpuSettings {
            mode: GpuMode::Off,
            ..GpuSettings::default()
        };
        assert!(!plan(&off, &[h100(1)]).unwrap().offload);
    }

    #[test]
    fn devices_must_exist() {
        let settings = GpuSettings {
            devices: vec![3],
            ..GpuSettings::default()
        };
        assert!(matches!(
            plan(&settings, &[h100(1)]),
            Err(GpuError::UnknownDevice { index: 3, .. })
        ));
    }

    #[test]
    fn this_cpu_build_sees_no_gpu() {
        // CI machines have no GPU and build without CUDA: the device list
        // must still be readable (the CPU device is not a GPU).
        assert!(devices().iter().all(|d| d.backend != "CPU"));
    }
}
