// The duty officer's whole declaration in Debian's chromium: sign in, choose the
// template, fill it in by keyboard, preview, send, and watch the board reach done.
// axe-core scans every page on the way (WCAG 2.1 A and AA); any violation fails.
// Usage: node console.mjs <base-url> <user> <password> <variables-json> <screenshot-dir>
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

const [base, user, password, variablesJson, shots] = process.argv.slice(2);
const variables = JSON.parse(variablesJson);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const failures = [];

async function scan(page, name) {
  const result = await new AxeBuilder({ page })
    .withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"])
    .analyze();
  for (const v of result.violations) {
    failures.push(`${name}: ${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  }
  // Reflow (WCAG 1.4.10): at 320 CSS px nothing scrolls sideways.
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  const viewport = page.viewportSize().width;
  if (viewport <= 320 && wide > viewport) failures.push(`${name}: ${wide} px wide at ${viewport} px`);
  console.log(`scanned ${name}: ${result.violations.length} violations`);
}

for (const width of [1280, 320]) {
  const context = await browser.newContext({ viewport: { width, height: 800 }, locale: "sv-SE" });
  const page = await context.newPage();
  const where = (name) => `${name} at ${width} px`;
  await page.goto(`${base}/konsol`);
  await scan(page, where("sign-in"));
  await page.getByLabel("Användarnamn").fill(user);
  await page.getByLabel("Lösenord").fill(password);
  await page.getByLabel("Lösenord").press("Enter");
  await page.waitForURL(`${base}/konsol`);
  await scan(page, where("crisis list"));
  await page.getByRole("link", { name: "Ny kris" }).first().click();
  await scan(page, where("templates"));
  await page.locator('a[href="/konsol/ny-kris/vattenlacka"]').click();
  await scan(page, where("declaration form"));
  for (const [name, value] of Object.entries(variables)) {
    await page.locator(`#var-${name}`).fill(value);
  }
  // Without an audience for SMS and email the server's error summary says so,
  // links to the field, and keeps what was typed.
  await page.getByRole("button", { name: "Förhandsgranska" }).click();
  await page.locator(".error-summary").waitFor();
  await scan(page, where("declaration errors"));
  await page.locator('input[name="audience"]').first().check();
  await page.getByRole("button", { name: "Förhandsgranska" }).click();
  await page.getByRole("heading", { name: "Granska innan du skickar" }).waitFor();
  await scan(page, where("preview"));
  if (width === 1280) await page.screenshot({ path: `${shots}/console-preview.png`, fullPage: true });
  await page.getByRole("button", { name: "Skicka krismeddelandet" }).click();
  await page.waitForURL(/\/konsol\/kris\//);
  // htmx swaps the board in every 2 s; wait for every channel done.
  await page.getByText(/4 av 4 kanaler klara/).waitFor({ state: "attached", timeout: 30000 });
  await scan(page, where("board"));
  if (width === 1280) await page.screenshot({ path: `${shots}/console-board.png`, fullPage: true });
  await context.close();
}
await browser.close();
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("console ok");
