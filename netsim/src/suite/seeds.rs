//! The published figures a suite run is read against: what Weave Net (sleeve and fast
//! datapath) and flannel's vxlan backend kept of native `tcp_bw` on the same cloud links the
//! named profiles model (the project's source documents 000-002, qperf figures).

/// Shares of native `tcp_bw` published for one link profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// The netsim link profile the figures were taken on.
    pub profile: &'static str,
    /// Weave's sleeve (userspace, UDP): overlay / native.
    pub weave_sleeve: Option<f64>,
    /// Weave's fast datapath (Open vSwitch kernel datapath, vxlan): overlay / native.
    pub weave_fastdp: Option<f64>,
    /// Flannel's vxlan backend: overlay / native.
    pub flannel_vxlan: Option<f64>,
    /// Where the figures are from.
    pub source: &'static str,
}

const fn share(overlay: f64, native: f64) -> Option<f64> {
    Some(overlay / native)
}

/// Every profile with published overlay figures.
pub const PUBLISHED: &[Published] = &[
    Published {
        profile: "azure-a0",
        weave_sleeve: share(0.557, 0.590),
        weave_fastdp: None,
        flannel_vxlan: None,
        source: "Weave 1.0.1 sleeve on Azure A0: 557 KB/s of 590",
    },
    Published {
        profile: "azure-a1",
        weave_sleeve: share(9.11, 12.5),
        weave_fastdp: None,
        flannel_vxlan: None,
        source: "Weave sleeve on Azure A1: 9.11 MB/s of 12.5",
    },
    Published {
        profile: "azure-a2",
        weave_sleeve: share(10.3, 24.8),
        weave_fastdp: None,
        flannel_vxlan: share(22.8, 24.8),
        source: "Azure A2: Weave sleeve 10.3 MB/s, flannel vxlan 22.8 MB/s, of 24.8",
    },
    Published {
        profile: "azure-a3",
        weave_sleeve: share(12.0, 48.0),
        weave_fastdp: None,
        flannel_vxlan: None,
        source: "Weave sleeve on Azure A3: 12 MB/s of 48",
    },
    Published {
        profile: "azure-a8",
        weave_sleeve: share(51.0, 310.0),
        weave_fastdp: None,
        flannel_vxlan: None,
        source: "Weave sleeve on Azure A8: 51 MB/s of 310",
    },
    Published {
        profile: "azure-d1",
        weave_sleeve: share(17.0, 56.3),
        weave_fastdp: None,
        flannel_vxlan: None,
        source: "Weave sleeve on Azure D1: 17 MB/s of 56.3",
    },
    Published {
        profile: "azure-d2",
        weave_sleeve: share(24.6, 117.0),
        weave_fastdp: None,
        flannel_vxlan: share(95.1, 117.0),
        source: "Azure D2: Weave sleeve 24.6 MB/s, flannel vxlan 95.1 MB/s, of 117",
    },
    Published {
        profile: "do-5",
        weave_sleeve: share(9.7, 108.0),
        weave_fastdp: share(71.3, 108.0),
        flannel_vxlan: None,
        source: "DigitalOcean $5: Weave sleeve 9.7 MB/s, fast datapath 71.3 MB/s, of 108",
    },
    Published {
        profile: "ec2-10g",
        weave_sleeve: None,
        weave_fastdp: share(1.09, 1.2),
        flannel_vxlan: None,
        source: "EC2 10 Gbit/s: Weave fast datapath at MTU 8950 1.09 GB/s of 1.2 \
                 (316 MB/s, 26 %, at MTU 1410)",
    },
];

/// The published figures for the link profile `link` (a netsim profile name).
pub fn published(link: &str) -> Option<&'static Published> {
    PUBLISHED.iter().find(|p| p.profile == link)
}

impl Published {
    /// The best share Weave reached on this link (fast datapath where measured, else sleeve).
    pub fn weave_best(&self) -> Option<f64> {
        self.weave_fastdp.or(self.weave_sleeve)
    }
}
