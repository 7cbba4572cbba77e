"""Writes a service manual as a real PDF (fpdf2), with known facts on known pages.

    make_manual_pdf.py OUT.pdf [--torque 40] [--pages 6]

Page 1 title and safety; page 2 two columns (burner nozzle left, flue gas right); page 3
a scanned-looking page with no text layer; page 4 the heat exchanger bolt torque; page 5
a parts table; page 6 the safety valve. Pages past 6 are inspection points, each with its
own gasket number (for the ingest benchmark's 200-page manual).
"""

import argparse

from fpdf import FPDF


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--torque", type=int, default=40)
    parser.add_argument("--pages", type=int, default=6)
    args = parser.parse_args()

    pdf = FPDF(format="letter")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=11)

    def page(*paragraphs, x=20, y=25, w=175):
        pdf.add_page()
        column(paragraphs, x, y, w)

    def column(paragraphs, x, y, w):
        pdf.set_xy(x, y)
        for text in paragraphs:
            pdf.set_x(x)
            pdf.multi_cell(w, 6, text)
            pdf.ln(4)

    page(
        "BX-7 Boiler Service Manual",
        "Read every safety notice before servicing the BX-7 condensing boiler. Isolate the gas supply "
        "and the electrical supply before removing the casing.",
    )
    pdf.add_page()
    column(
        [
            "Burner",
            "The burner nozzle size is 0.75 gallons per hour. Replace the nozzle every heating season.",
        ],
        15, 25, 85,
    )
    column(
        [
            "Flue gas",
            "The flue gas temperature must stay below 260 degrees Celsius. Check it after every burner service.",
        ],
        110, 25, 85,
    )
    pdf.add_page()  # a scan: only a drawing, no text layer
    pdf.rect(30, 40, 150, 200)
    page(
        "Heat exchanger",
        f"Tighten the heat exchanger bolts to {args.torque} newton meters in a cross pattern. "
        "Always fit a new exchanger gasket when the bolts have been removed.",
    )
    page("Spare parts")
    for part, number in [("Part", "Number"), ("Ignition electrode", "IE-5521"), ("Flame sensor", "FS-2093"),
                         ("Exchanger gasket", "EG-7710")]:
        pdf.set_x(20)
        pdf.cell(70, 8, part, border=1)
        pdf.cell(50, 8, number, border=1, new_x="LMARGIN", new_y="NEXT")
    page(
        "Safety valve",
        "The safety valve opens at 3 bar. Test it by hand once a year.",
    )
    for n in range(7, args.pages + 1):
        page(
            f"Inspection point {n}",
            f"At inspection point {n} check the gasket marked G-{n:04d} for cracks and replace it if it is brittle. "
            f"The clamp at point {n} takes {10 + n % 17} newton meters. Record the reading in the service log "
            "together with the date, the technician's name and the boiler's operating hours.",
        )
    pdf.output(args.out)


if __name__ == "__main__":
    main()
