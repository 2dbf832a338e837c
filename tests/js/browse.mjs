// Loads the gateway's browse page in headless Chromium (Debian's, driven by
// playwright-core), searches through its form as a person would, checks
// the answer, and saves a screenshot.
//
// usage: node browse.mjs GATEWAY_URL SCREENSHOT.png
// Expects the swarm to hold make_catalogue_datasets.py's "atlantic" and
// "arctic" (whose description carries HTML that must show as text).
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: 60_000,
});
const fail = (msg) => { console.error(msg); process.exitCode = 1; };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await page.goto(url + '/', { timeout: 60_000 });
  const all = await page.locator('article.item').count();
  if (all < 2) fail(`the page lists ${all} datasets, expected both`);
  // Search with the form: type, submit, wait for the answer.
  await page.fill('input[name=q]', 'ice');
  await Promise.all([page.waitForURL(/[?&]q=ice/, { timeout: 30_000 }), page.click('button[type=submit]')]);
  const names = await page.locator('article.item').evaluateAll((els) => els.map((e) => e.dataset.name));
  if (JSON.stringify(names) !== JSON.stringify(['arctic'])) fail(`searching "ice" listed ${JSON.stringify(names)}`);
  const count = await page.textContent('#count');
  if (!/^1 dataset found/.test(count)) fail(`the count reads ${JSON.stringify(count)}`);
  // The publisher's HTML is shown as text, never run.
  const text = await page.textContent('article.item');
  if (!text.includes("<script>alert('x')</script>")) fail('the description is not shown as text');
  if (await page.locator('article.item script, article.item b').count() !== 0) fail('HTML from a publisher was rendered');
  // The quick-look loaded (a PNG with a size).
  const img = page.locator('article.item img');
  await img.waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => { const i = document.querySelector('article.item img'); return i && i.complete; }, null, { timeout: 120_000 });
  const w = await img.evaluate((i) => i.naturalWidth);
  if (!(w > 0)) fail('the quick-look did not load');
  // A bbox search through the form too.
  await page.fill('input[name=q]', '');
  await page.fill('input[name=bbox]', '-60,10,-30,40');
  await Promise.all([page.waitForURL(/bbox=/, { timeout: 30_000 }), page.click('button[type=submit]')]);
  const byBox = await page.locator('article.item').evaluateAll((els) => els.map((e) => e.dataset.name));
  if (JSON.stringify(byBox) !== JSON.stringify(['atlantic'])) fail(`the bbox search listed ${JSON.stringify(byBox)}`);
  await page.goto(url + '/?q=sea', { timeout: 60_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('article.item img')].every((i) => i.complete), null, { timeout: 120_000 });
  await page.screenshot({ path: shot, fullPage: true });
  if (dialogs.length) fail(`the page opened dialogs: ${dialogs}`);
  if (!process.exitCode) console.log('ok');
} finally {
  await browser.close();
}
