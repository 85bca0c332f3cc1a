//! The optional TOML config file (`--config`): read under the command line and environment.

use anyhow::Context;

use super::ServeArgs;

impl ServeArgs {
    /// Reads the `--config` file, if any, under the command line.
    pub fn with_file(self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file: ServeArgs = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(self.over(file))
    }

    /// `self`'s settings, with `file`'s where `self` has none.
    pub(super) fn over(self, file: ServeArgs) -> Self {
        Self {
            config: self.config,
            dev: self.dev || file.dev,
            http: self.http.or(file.http),
            metrics: self.metrics.or(file.metrics),
            admin: self.admin.or(file.admin),
            media_ip: self.media_ip.or(file.media_ip),
            udp_port: self.udp_port.or(file.udp_port),
            ice_tcp: self.ice_tcp.or(file.ice_tcp),
            tcp_port: self.tcp_port.or(file.tcp_port),
            turn_url: if self.turn_url.is_empty() {
                file.turn_url
            } else {
                self.turn_url
            },
            turn_secret: self.turn_secret.or(file.turn_secret),
            turn_ttl: self.turn_ttl.or(file.turn_ttl),
            redis: self.redis.or(file.redis),
            node_id: self.node_id.or(file.node_id),
            spill_above: self.spill_above.or(file.spill_above),
            workers: self.workers.or(file.workers),
            quality_interval: self.quality_interval.or(file.quality_interval),
            volume_interval: self.volume_interval.or(file.volume_interval),
            media_tick: self.media_tick.or(file.media_tick),
            bwe: self.bwe.or(file.bwe),
            media_batch_window: self.media_batch_window.or(file.media_batch_window),
            cdr_file: self.cdr_file.or(file.cdr_file),
            call_records: self.call_records.or(file.call_records),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            keys_file: self.keys_file.or(file.keys_file),
            invite_timeout: self.invite_timeout.or(file.invite_timeout),
            reconnect_grace: self.reconnect_grace.or(file.reconnect_grace),
            push_webhook: self.push_webhook.or(file.push_webhook),
            max_frame_bytes: self.max_frame_bytes.or(file.max_frame_bytes),
            max_requests_per_sec: self.max_requests_per_sec.or(file.max_requests_per_sec),
            max_call_members: self.max_call_members.or(file.max_call_members),
            max_calls_per_user: self.max_calls_per_user.or(file.max_calls_per_user),
            ws_idle_timeout: self.ws_idle_timeout.or(file.ws_idle_timeout),
            max_invites_per_minute: self.max_invites_per_minute.or(file.max_invites_per_minute),
            max_pushes_per_minute: self.max_pushes_per_minute.or(file.max_pushes_per_minute),
            login_timeout: self.login_timeout.or(file.login_timeout),
            http_header_timeout: self.http_header_timeout.or(file.http_header_timeout),
            max_sockets_per_ip: self.max_sockets_per_ip.or(file.max_sockets_per_ip),
            max_sockets: self.max_sockets.or(file.max_sockets),
            max_tracks_per_kind: self.max_tracks_per_kind.or(file.max_tracks_per_kind),
            max_offer_mlines: self.max_offer_mlines.or(file.max_offer_mlines),
            max_peer_addresses: self.max_peer_addresses.or(file.max_peer_addresses),
            max_peer_candidates: self.max_peer_candidates.or(file.max_peer_candidates),
            max_peer_packet_rate: self.max_peer_packet_rate.or(file.max_peer_packet_rate),
            opus_decode_budget: self.opus_decode_budget.or(file.opus_decode_budget),
            fail_driver_after: self.fail_driver_after,
            fail_worker_after: self.fail_worker_after,
            panic_media_of: self.panic_media_of,
            log_format: self.log_format.or(file.log_format),
            log_level: self.log_level.or(file.log_level),
        }
    }
}
