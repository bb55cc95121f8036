//! The 82540EM's internal copper PHY (Marvell 88E1011 compatible), reached
//! through MDIC. It always sees a link partner at 1000 Mb/s full duplex,
//! auto-negotiation completing at once, unless it is powered down or held
//! in reset.

/// The PHY's MDIO address.
pub const PHY_ADDR: u32 = 1;

/// IEEE registers.
pub const PHY_CTRL: usize = 0x00;
/// Status.
pub const PHY_STATUS: usize = 0x01;
/// Identifier, high word.
pub const PHY_ID1: usize = 0x02;
/// Identifier, low word (model and revision).
pub const PHY_ID2: usize = 0x03;
/// Auto-negotiation advertisement.
pub const PHY_AUTONEG_ADV: usize = 0x04;
/// Link partner ability.
pub const PHY_LP_ABILITY: usize = 0x05;
/// Auto-negotiation expansion.
pub const PHY_AUTONEG_EXP: usize = 0x06;
/// 1000BASE-T control.
pub const PHY_1000T_CTRL: usize = 0x09;
/// 1000BASE-T status.
pub const PHY_1000T_STATUS: usize = 0x0A;
/// Extended status.
pub const PHY_EXT_STATUS: usize = 0x0F;
/// M88: PHY specific control.
pub const M88_PSCR: usize = 0x10;
/// M88: PHY specific status.
pub const M88_PSSR: usize = 0x11;
/// M88: extended PHY specific control.
pub const M88_EPSCR: usize = 0x14;

/// PHY_CTRL: loopback.
pub const MII_CR_LOOPBACK: u16 = 0x4000;
/// PHY_CTRL: reset (self-clearing).
pub const MII_CR_RESET: u16 = 0x8000;
/// PHY_CTRL: power down.
pub const MII_CR_POWER_DOWN: u16 = 0x0800;
/// PHY_CTRL: restart auto-negotiation (self-clearing).
pub const MII_CR_RESTART_AUTO_NEG: u16 = 0x0200;
/// PHY_STATUS: link up.
pub const MII_SR_LINK_STATUS: u16 = 0x0004;
/// PHY_STATUS: auto-negotiation complete.
pub const MII_SR_AUTONEG_COMPLETE: u16 = 0x0020;
/// M88 PSSR: link up.
pub const M88_PSSR_LINK: u16 = 0x0400;

/// 88E1011 identifier: OUI 0x005043 (vendor word 0x0141), model 0x02.
const ID1: u16 = 0x0141;
const ID2: u16 = 0x0C20;
/// Control after reset: auto-negotiation on, full duplex, 1000 Mb/s.
const CTRL_DEFAULT: u16 = 0x1140;
/// Status capabilities: 100X/10T full and half, extended status,
/// preamble suppression, auto-negotiation, extended registers.
const STATUS_CAPS: u16 = 0x7949;
/// Advertise 10/100 full and half, 802.3 selector.
const ADV_DEFAULT: u16 = 0x01E1;
/// Partner: acknowledge, PAUSE and asymmetric PAUSE, 10/100 full and
/// half, 802.3 selector.
const LP_ABILITY: u16 = 0x4000 | 0x0800 | 0x0400 | 0x01E0 | 0x0001;
/// Partner able to auto-negotiate.
const AUTONEG_EXP: u16 = 0x0001;
/// Advertise 1000BASE-T full and half duplex.
const GT_CTRL_DEFAULT: u16 = 0x0300;
/// Partner 1000BASE-T full and half duplex, local and remote receivers OK.
const GT_STATUS_LINK: u16 = 0x0800 | 0x0400 | 0x1000 | 0x2000;
/// 1000BASE-T full and half duplex capable.
const EXT_STATUS: u16 = 0x3000;
/// Auto crossover, CRS on transmit off.
const PSCR_DEFAULT: u16 = 0x0068;
/// Resolved 1000 Mb/s full duplex, link up, cable under 50 m.
const PSSR_LINK: u16 = 0x8000 | 0x2000 | 0x0800 | M88_PSSR_LINK;
/// TX_CLK 25 MHz, downshift defaults.
const EPSCR_DEFAULT: u16 = 0x0D60;

/// Registers whose value is computed, not stored.
const READ_ONLY: [usize; 8] = [
    PHY_STATUS,
    PHY_ID1,
    PHY_ID2,
    PHY_LP_ABILITY,
    PHY_AUTONEG_EXP,
    PHY_1000T_STATUS,
    PHY_EXT_STATUS,
    M88_PSSR,
];

/// The PHY's register file.
#[derive(Debug, Clone)]
pub struct Phy {
    regs: [u16; 32],
    /// The cable is plugged in (not a register: survives resets).
    cable: bool,
}

impl Default for Phy {
    fn default() -> Self {
        let mut regs = [0u16; 32];
        regs[PHY_CTRL] = CTRL_DEFAULT;
        regs[PHY_AUTONEG_ADV] = ADV_DEFAULT;
        regs[PHY_1000T_CTRL] = GT_CTRL_DEFAULT;
        regs[M88_PSCR] = PSCR_DEFAULT;
        regs[M88_EPSCR] = EPSCR_DEFAULT;
        Self { regs, cable: true }
    }
}

impl Phy {
    /// Hardware reset (CTRL.PHY_RST or power on): every register to its default.
    pub fn hw_reset(&mut self) {
        *self = Self {
            cable: self.cable,
            ..Self::default()
        };
    }

    /// Plugs the cable in (`true`) or pulls it out.
    pub fn set_cable(&mut self, up: bool) {
        self.cable = up;
    }

    /// Whether the PHY has a link to its partner: powered and cabled.
    pub fn link_up(&self) -> bool {
        self.regs[PHY_CTRL] & MII_CR_POWER_DOWN == 0 && self.cable
    }

    /// Whether the PHY loops transmitted frames back.
    pub fn loopback(&self) -> bool {
        self.regs[PHY_CTRL] & MII_CR_LOOPBACK != 0
    }

    /// Reads register `reg` (0..32).
    pub fn read(&self, reg: usize) -> u16 {
        let link = self.link_up();
        let when_up = |v: u16| if link { v } else { 0 };
        match reg {
            PHY_STATUS => STATUS_CAPS | when_up(MII_SR_LINK_STATUS | MII_SR_AUTONEG_COMPLETE),
            PHY_ID1 => ID1,
            PHY_ID2 => ID2,
            PHY_LP_ABILITY => when_up(LP_ABILITY),
            PHY_AUTONEG_EXP => when_up(AUTONEG_EXP),
            PHY_1000T_STATUS => when_up(GT_STATUS_LINK),
            PHY_EXT_STATUS => EXT_STATUS,
            M88_PSSR => when_up(PSSR_LINK),
            r => self.regs.get(r).copied().unwrap_or(0),
        }
    }

    /// Writes register `reg` (0..32). A software reset keeps the other
    /// registers (the 88E1011 applies their new values on reset); restart
    /// of auto-negotiation completes at once.
    pub fn write(&mut self, reg: usize, value: u16) {
        if READ_ONLY.contains(&reg) || reg >= self.regs.len() {
            return;
        }
        let value = if reg == PHY_CTRL {
            value & !(MII_CR_RESET | MII_CR_RESTART_AUTO_NEG)
        } else {
            value
        };
        self.regs[reg] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_sees_an_m88e1011_with_gigabit_link() {
        let mut p = Phy::default();
        let id = (u32::from(p.read(PHY_ID1)) << 16) | u32::from(p.read(PHY_ID2) & 0xFFF0);
        assert_eq!(id, 0x0141_0C20, "M88E1011_I_PHY_ID");
        assert_eq!(
            p.read(PHY_STATUS) & (MII_SR_LINK_STATUS | MII_SR_AUTONEG_COMPLETE),
            0x24
        );
        assert_eq!(p.read(M88_PSSR) & 0xC000, 0x8000, "1000 Mb/s");
        p.write(
            PHY_CTRL,
            CTRL_DEFAULT | MII_CR_RESET | MII_CR_RESTART_AUTO_NEG,
        );
        assert_eq!(p.read(PHY_CTRL), CTRL_DEFAULT, "self-clearing bits");
        p.write(PHY_STATUS, 0);
        assert_ne!(p.read(PHY_STATUS), 0, "read-only");
        p.write(PHY_CTRL, MII_CR_POWER_DOWN);
        assert!(!p.link_up());
        assert_eq!(p.read(PHY_STATUS) & MII_SR_LINK_STATUS, 0);
        p.hw_reset();
        assert!(p.link_up());
        assert_eq!(p.read(40), 0);
    }

    #[test]
    fn the_cable_drives_the_link_bits_and_survives_a_reset() {
        let mut p = Phy::default();
        p.set_cable(false);
        assert!(!p.link_up());
        assert_eq!(p.read(PHY_STATUS) & MII_SR_LINK_STATUS, 0);
        assert_eq!(p.read(M88_PSSR), 0);
        p.hw_reset();
        assert!(!p.link_up(), "a PHY reset does not plug the cable in");
        p.set_cable(true);
        assert_ne!(p.read(PHY_STATUS) & MII_SR_LINK_STATUS, 0);
    }
}
