// Release 2 shows a promotion banner: more code, so the minifier picks other short names.

export function promotionText(season, percent) {
  const label = season.charAt(0).toUpperCase() + season.slice(1);
  return `${label} sale: ${percent} % off with a coupon`;
}

export function renderBanner(target, season, percent) {
  const text = promotionText(season, percent);
  if (target) {
    target.textContent = text;
  }
  return text;
}
