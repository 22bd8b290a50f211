// Each role's main flow in Debian's chromium, against a running krisbud:
// the duty officer declares (at 1280 and 320 CSS px) and watches the board reach
// done, the operator confirms a channel, the approver approves a version someone
// else drafted, the auditor verifies, looks a recipient up and exports, the
// admin creates a group and uploads members with a refused row, and the duty
// officer previews an update, gives the all-clear and closes the crisis, and
// withdraws the other as sent in error. axe-core scans every page on the way
// (WCAG 2.1 A and AA); at 320 px no page may scroll sideways (WCAG 1.4.10). Any
// violation fails the run.
// Usage: node console.mjs <config.json>
//   { "base": url, "users": { role: [name, password] }, "variables": {...}, "shots": dir }
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { base, users, variables, shots } = config;
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
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  const viewport = page.viewportSize().width;
  if (viewport <= 320 && wide > viewport) failures.push(`${name}: ${wide} px wide at ${viewport} px`);
  console.log(`scanned ${name}: ${result.violations.length} violations`);
}

async function signIn(role, width = 1280) {
  const context = await browser.newContext({ viewport: { width, height: 800 }, locale: "sv-SE", acceptDownloads: true });
  const page = await context.newPage();
  const [user, password] = users[role];
  await page.goto(`${base}/konsol`);
  await page.getByLabel("Användarnamn").fill(user);
  await page.getByLabel("Lösenord").fill(password);
  await page.getByLabel("Lösenord").press("Enter");
  await page.waitForURL(`${base}/konsol`);
  return { context, page };
}

async function declare(width) {
  const where = (name) => `${name} at ${width} px`;
  const context = await browser.newContext({ viewport: { width, height: 800 }, locale: "sv-SE" });
  const page = await context.newPage();
  await page.goto(`${base}/konsol`);
  await scan(page, where("sign-in"));
  const [user, password] = users.duty_officer;
  await page.getByLabel("Användarnamn").fill(user);
  await page.getByLabel("Lösenord").fill(password);
  await page.getByLabel("Lösenord").press("Enter");
  await page.waitForURL(`${base}/konsol`);
  await scan(page, where("crisis list"));
  await page.getByRole("link", { name: "Ny kris" }).first().click();
  await scan(page, where("templates"));
  await page.locator('a[href="/konsol/ny-kris/vattenlacka"]').click();
  await scan(page, where("declaration form"));
  // By keyboard: each blank is reached with Tab and typed into.
  const blanks = await page.locator('[id^="var-"]').evaluateAll((fields) => fields.map((f) => f.id));
  await page.locator(`#${blanks[0]}`).focus();
  for (const id of blanks) {
    const focused = await page.evaluate(() => document.activeElement?.id);
    if (focused !== id) failures.push(where(`Tab reached ${focused}, not ${id}`));
    await page.keyboard.type(variables[id.slice("var-".length)] ?? "");
    await page.keyboard.press("Tab");
  }
  // Without an audience for SMS and email the server's error summary says so,
  // links to the field, and keeps what was typed.
  await page.getByRole("button", { name: "Förhandsgranska" }).click();
  await page.locator(".error-summary").waitFor();
  await scan(page, where("declaration errors"));
  await page.locator('input[name="audience"]').first().check();
  await page.getByRole("button", { name: "Förhandsgranska" }).press("Enter");
  await page.getByRole("heading", { name: "Granska innan du skickar" }).waitFor();
  await scan(page, where("preview"));
  if (width === 1280 && shots) await page.screenshot({ path: `${shots}/console-preview.png`, fullPage: true });
  await page.getByRole("button", { name: "Skicka krismeddelandet" }).click();
  await page.waitForURL(/\/konsol\/kris\//);
  const board = page.url();
  // htmx swaps the board in every 2 s; wait for every channel done.
  await page.getByText(/4 av 4 kanaler klara/).waitFor({ state: "attached", timeout: 30000 });
  await scan(page, where("board"));
  if (width === 1280 && shots) await page.screenshot({ path: `${shots}/console-board.png`, fullPage: true });
  await context.close();
  return board;
}

async function confirm(board) {
  const { context, page } = await signIn("operator");
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await page.getByRole("link", { name: "Att bekräfta" }).first().click();
  await scan(page, "channels to confirm");
  await page.goto(board);
  await scan(page, "board (operator)");
  // The copy button puts the exact SMS text on the clipboard.
  await page.locator('button[data-copy^="text-sms-"]').first().click();
  await page.getByRole("button", { name: "Kopierat" }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  if (!copied.includes("Farsta")) failures.push(`the copy button copied ${JSON.stringify(copied)}`);
  await page.getByLabel("Anteckning (frivillig)").first().fill("Kontrollerat");
  await page.getByRole("button", { name: "Bekräfta att SMS är ute" }).click();
  await page.waitForURL(board);
  const confirmed = await page.locator("#board").textContent();
  if (!confirmed.includes(users.operator[0])) failures.push("the board does not name the operator who confirmed");
  await scan(page, "board after confirmation");
  await context.close();
}

async function approve() {
  const { context, page } = await signIn("template_approver");
  await page.getByRole("link", { name: "Godkänn mallar" }).click();
  await scan(page, "approval queue");
  await page.locator('a[href^="/konsol/godkann/"]').first().click();
  await scan(page, "side-by-side diff");
  await page.getByRole("button", { name: /Godkänn version/ }).click();
  await page.getByText("Ingen mallversion väntar").waitFor();
  await context.close();
}

async function audit() {
  const { context, page } = await signIn("auditor");
  await page.getByRole("link", { name: "Granskningslogg" }).click();
  await scan(page, "audit log");
  await page.getByRole("button", { name: "Verifiera kedjan" }).click();
  await page.getByRole("heading", { name: /Kedjan är/ }).waitFor();
  const verdict = await page.getByRole("heading", { name: /Kedjan är/ }).textContent();
  if (verdict.includes("BRUTEN")) failures.push(`verification: ${verdict}`);
  await scan(page, "verification");
  await page.getByLabel(/Fick den här personen meddelandet/).fill("070-174 06 05");
  await page.getByRole("button", { name: "Sök mottagare" }).click();
  await page.getByRole("heading", { name: /Mottagaren/ }).waitFor();
  await scan(page, "recipient lookup answer");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: /exportpaketet/ }).click(),
  ]);
  const size = readFileSync(await download.path()).length;
  if (size < 1000) failures.push(`the export bundle is ${size} bytes`);
  await context.close();
}

async function edit() {
  const { context, page } = await signIn("template_editor");
  await page.getByRole("link", { name: "Mallar" }).click();
  await scan(page, "templates (editor)");
  await page.locator('a[href="/konsol/mallar/vattenlacka/ny"]').click();
  await scan(page, "new version form");
  await page.locator('a[href="/konsol/mallar"]').first().click();
  await page.locator('a[href^="/konsol/mallar/vattenlacka/1"]').click();
  await scan(page, "version preview");
  await context.close();
}

async function administer() {
  const { context, page } = await signIn("admin", 320);
  await page.getByRole("link", { name: "Administration" }).click();
  await scan(page, "administration at 320 px");
  // A new group, and a member file with a refused row: the upload report.
  await page.getByLabel(/Kortnamn/).fill("webbtest");
  await page.getByLabel("Namn", { exact: true }).fill("Webbtest");
  await page.getByRole("button", { name: "Skapa gruppen" }).click();
  await page.getByLabel("Ersätt medlemmarna i Webbtest med en CSV-fil").setInputFiles({
    name: "medlemmar.csv",
    mimeType: "text/csv",
    buffer: Buffer.from("phone,email,language\n070-174 09 01,,sv\n070-12,,sv\n"),
  });
  await page.getByRole("button", { name: "Ladda upp" }).last().click();
  await page.getByRole("heading", { name: /Inläsning av/ }).waitFor();
  const report = await page.textContent("main");
  if (!report.includes("3")) failures.push(`the upload report does not name line 3: ${report}`);
  await scan(page, "upload report at 320 px");
  await context.close();
}

async function allClear(board) {
  const { context, page } = await signIn("duty_officer");
  await page.goto(board);
  await page.getByRole("link", { name: "Uppdatera", exact: true }).click();
  await scan(page, "update form");
  await page.locator("#var-beraknat_klart").fill("i morgon kl. 08");
  await page.getByRole("button", { name: "Förhandsgranska" }).click();
  await page.getByRole("heading", { name: "Så här blir uppdateringen" }).waitFor();
  await scan(page, "update preview");
  await page.goto(board);
  await page.getByRole("link", { name: "Faran över" }).click();
  await scan(page, "all-clear step");
  await page.getByRole("button", { name: "Faran över" }).click();
  await page.waitForURL(board);
  await page.getByText("Faran är över och det har meddelats").waitFor();
  await scan(page, "board after the all-clear");
  await page.getByRole("link", { name: "Avsluta krisen" }).click();
  await scan(page, "close step");
  await page.getByRole("button", { name: "Avsluta krisen" }).click();
  await page.waitForURL(board);
  await page.getByText("Krisen är avslutad").waitFor();
  await scan(page, "board after the close");
  await context.close();
}

async function withdraw(board) {
  const { context, page } = await signIn("duty_officer", 320);
  await page.goto(board);
  await page.getByRole("link", { name: "Återkalla som felaktigt" }).click();
  await scan(page, "correction step at 320 px");
  await page.getByLabel(/Varför återkallas meddelandet/).fill("Fel område i meddelandet");
  await page.getByRole("button", { name: "Återkalla som felaktigt" }).click();
  await page.waitForURL(board);
  await page.getByText("Meddelandet är återkallat som felaktigt").waitFor();
  await scan(page, "board after the correction at 320 px");
  await context.close();
}

const board = await declare(1280);
const phoneBoard = await declare(320);
await confirm(board);
await approve();
await edit();
await audit();
await administer();
await allClear(board);
await withdraw(phoneBoard);
await browser.close();
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("console ok");
