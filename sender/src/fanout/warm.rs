//! Warm-up: an audience and a campaign joined into what notifiers need at
//! send time, with every device's payload resolved in advance.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audience::Audience;
use crate::campaign::{Campaign, CampaignError, Payloads};

/// A device whose locale the campaign cannot serve, or a campaign that
/// cannot render.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// Devices in a targeted market have a locale with no message, no
    /// fallback and no default.
    #[error(
        "{devices} device(s) in market {market} have locale {locale:?}, which {campaign} cannot serve: add a [messages.\"{locale}\"] table, a [fallback] entry or a default_locale",
        campaign = campaign.display()
    )]
    Locale {
        /// The campaign file.
        campaign: std::path::PathBuf,
        /// The locale.
        locale: String,
        /// The market the devices are in.
        market: String,
        /// How many devices.
        devices: u64,
    },
    /// No device of the audience is in a market the campaign sends to.
    #[error(
        "no device of the audience is in a market {campaign} sends to: the campaign's markets are {}, the audience's {}",
        campaign_markets.join(", "),
        audience_markets.join(", "),
        campaign = campaign.display()
    )]
    NoMarket {
        /// The campaign file.
        campaign: std::path::PathBuf,
        /// The markets the campaign lists.
        campaign_markets: Vec<String>,
        /// The markets the audience's devices are in.
        audience_markets: Vec<String>,
    },
    /// The campaign failed to render.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
}

/// Per shard: which payload each of its locales gets, and which of its
/// markets the campaign sends to.
#[derive(Debug)]
pub(crate) struct ShardRoutes {
    /// Shard locale index -> payload index (`u16::MAX`: unresolved).
    pub(crate) payload_of_locale: Vec<u16>,
    /// Shard market index -> campaign market index.
    pub(crate) campaign_market: Vec<Option<usize>>,
}

/// An audience and campaign ready to fire.
#[derive(Debug)]
pub struct Warm {
    pub(crate) audience: Arc<Audience>,
    pub(crate) campaign: Arc<Campaign>,
    pub(crate) payloads: Payloads,
    pub(crate) routes: Vec<ShardRoutes>,
    targeted: u64,
    /// Targeted devices per platform (iOS, Android).
    by_platform: [u64; 2],
    excluded: BTreeMap<String, u64>,
    checksum: String,
}

impl Warm {
    /// Resolves every targeted device's payload. Fails if a targeted device
    /// has a locale the campaign cannot serve.
    pub fn new(audience: Arc<Audience>, campaign: Arc<Campaign>) -> Result<Self, WarmError> {
        let payloads = Payloads::render(&campaign)?;
        let mut routes = Vec::with_capacity(audience.shards().len());
        let mut targeted = 0;
        let mut by_platform = [0u64; 2];
        let mut excluded: BTreeMap<String, u64> = BTreeMap::new();
        let mut unresolved: BTreeMap<(String, String), u64> = BTreeMap::new();
        for shard in audience.shards() {
            let payload_of_locale: Vec<u16> = shard
                .locales()
                .iter()
                .map(|l| campaign.resolve_locale(l).and_then(|m| payloads.index_of(m)).map_or(u16::MAX, |i| i as u16))
                .collect();
            let campaign_market: Vec<Option<usize>> =
                shard.markets().iter().map(|m| campaign.markets.iter().position(|cm| &cm.code == m)).collect();
            for run in shard.runs() {
                let market = &shard.markets()[usize::from(run.market)];
                let n = u64::from(run.end - run.start);
                if campaign_market[usize::from(run.market)].is_none() {
                    *excluded.entry(market.clone()).or_default() += n;
                    continue;
                }
                targeted += n;
                by_platform[run.platform as usize] += n;
                for i in run.start..run.end {
                    let locale = shard.locale(run.platform, i as usize);
                    if payload_of_locale[usize::from(locale)] == u16::MAX {
                        *unresolved.entry((shard.locales()[usize::from(locale)].clone(), market.clone())).or_default() += 1;
                    }
                }
            }
            routes.push(ShardRoutes { payload_of_locale, campaign_market });
        }
        if let Some(((locale, market), devices)) = unresolved.into_iter().next() {
            return Err(WarmError::Locale { campaign: campaign.source().to_owned(), locale, market, devices });
        }
        if targeted == 0 && !excluded.is_empty() {
            return Err(WarmError::NoMarket {
                campaign: campaign.source().to_owned(),
                campaign_markets: campaign.markets.iter().map(|m| m.code.clone()).collect(),
                audience_markets: excluded.into_keys().collect(),
            });
        }
        let checksum = format!("{:016x}-{}", audience.checksum(), &campaign.hash()[..16]);
        Ok(Self { audience, campaign, payloads, routes, targeted, by_platform, excluded, checksum })
    }

    /// The audience.
    pub fn audience(&self) -> &Arc<Audience> {
        &self.audience
    }

    /// The campaign.
    pub fn campaign(&self) -> &Arc<Campaign> {
        &self.campaign
    }

    /// The rendered payloads.
    pub fn payloads(&self) -> &Payloads {
        &self.payloads
    }

    /// Devices the campaign sends to.
    pub fn targeted(&self) -> u64 {
        self.targeted
    }

    /// Devices the campaign sends to on `platform`.
    pub fn targeted_on(&self, platform: crate::audience::Platform) -> u64 {
        self.by_platform[platform as usize]
    }

    /// Devices in markets the campaign does not list, per market.
    pub fn excluded(&self) -> &BTreeMap<String, u64> {
        &self.excluded
    }

    /// Identifies exactly what is loaded: the audience checksum and the
    /// campaign hash.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }
}
