"""Generate the toy English corpus bundled with lmforge.

Writes ``lmforge/data/corpus/train.txt`` (~400 KB) and ``val.txt`` (~40 KB):
UTF-8, one document per line, each document a short paragraph of 2-6
sentences about an everyday topic (cooking, weather, travel, school, work,
gardens, animals, science, sports, music, city life, daily routines).

The text comes from a small template grammar. A template such as
``"{he} bought {num_word} {produce} at the {food_shop}."`` is expanded
recursively from the word lists in ``VOCAB``; a document binds a protagonist
(name, occupation, pronouns) and a friend once, so pronouns agree within the
paragraph. Narratives are in the past tense; the "routine" topic is in the
present tense so that subject-verb agreement (he works / they work) is also
seen. The protagonist's gender is drawn 50/50 independently of the
occupation, so he/she, his/her and male/female names stay balanced across
occupations.

Train and val use separate seeds; val drops any line that also occurs in
train. Running the script twice gives byte-identical files.
"""
import random
import re
from collections import Counter
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "lmforge" / "data" / "corpus"
TRAIN_SEED, VAL_SEED = 20240601, 77031
TRAIN_BYTES, VAL_BYTES = 400_000, 40_000
CONNECTIVE_PROB, CLOSER_PROB = 0.2, 0.7

MALE_NAMES = ("James Daniel Omar Lucas Ethan Samuel Noah Hiroshi Mateo Arjun David Leo Kwame Thomas Ivan Felix "
              "Rafael Malik Oliver Peter Jonas Ahmed Carlos Ben Marco Tariq Henry Victor Kenji Diego Adam Isaac "
              "Tomás André Liam George Yusuf Andrew Hugo Emil").split()
FEMALE_NAMES = ("Maria Sarah Aisha Emma Sofia Priya Hannah Yuki Lucia Grace Fatima Olivia Chloé Amara Nina Elena "
                "Mei Laura Zoë Rosa Leila Anna Clara Ingrid Noémie Julia Ruth Alice Nadia Isabel Maya Keiko Lena "
                "Esther Chiara Amina Helen Vera Irene Beatriz").split()
PRONOUNS = {"m": ("he", "his", "him", "himself", "man"), "f": ("she", "her", "her", "herself", "woman")}
KIN = {"m": "brother cousin friend neighbor colleague son father uncle".split(),
       "f": "sister cousin friend neighbor colleague daughter mother aunt".split()}
OCCUPATIONS = ("teacher|nurse|engineer|baker|pilot|doctor|farmer|lawyer|chef|mechanic|librarian|architect|"
               "carpenter|dentist|journalist|firefighter|scientist|accountant|plumber|electrician|gardener|"
               "photographer|pharmacist|police officer|secretary|programmer|designer|cashier|server|musician|"
               "painter|tailor|dancer|translator|vet|bus driver|shop assistant|receptionist|surgeon|"
               "hairdresser").split("|")
PETS = "dog|cat|rabbit|parrot|tortoise|hamster|goldfish|puppy|kitten"
PET_NAMES = "Biscuit|Pepper|Luna|Milo|Ziggy|Olive|Pickles|Shadow|Mango|Toffee|Button|Comet"


def opts(text):
    """Split a '|'-separated option string into a list."""
    return text.split("|")


VOCAB = {
    # shared
    "season": opts("spring|summer|autumn|winter"), "num_word": opts("two|three|four|five|six|seven|eight|nine|ten"),
    "when": opts("last Saturday|one rainy morning|on Tuesday|early one morning|yesterday|two weeks ago|"
                 "one evening in {season}|last {season}|on a cold winter day|on a warm afternoon|one Sunday"),
    "when_rel": opts("last weekend|in the spring|during the holidays|last month|over the summer|in early autumn"),
    "weekday": opts("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"),
    "num": lambda rng: str(rng.randint(2, 40)),
    "clock": lambda rng: f"{rng.randint(5, 11)}:{rng.choice(['00', '15', '30', '45'])}",
    "grams": lambda rng: str(rng.choice(range(100, 1001, 50))),
    "price": lambda rng: f"{rng.randint(12, 95)} dollars",
    "temp": lambda rng: f"{rng.randint(-8, 36)} degrees",
    "score": lambda rng: "{} to {}".format(*sorted(rng.sample(range(0, 9), 2), reverse=True)),
    "ordinal": opts("first|second|third|fifth|seventh|tenth|twelfth"),
    "town": opts("Millbrook|Ashford|Riverton|Oakdale|Pinehurst|Cedar Falls|Brookfield|Fairhaven|Westmoor|"
                 "Lakeview|Stonebridge|Elmwood"),
    "city": opts("Lisbon|Kyoto|Nairobi|Toronto|Oslo|Lima|Seoul|Marrakesh|Prague|Melbourne|Istanbul|Hanoi|Dublin|"
                 "Buenos Aires|Cape Town|Vancouver|Edinburgh|Mexico City"),
    "country": opts("Portugal|Japan|Kenya|Canada|Norway|Peru|Korea|Morocco|Italy|Brazil|Vietnam|Iceland|Chile|"
                    "Egypt|Greece|India"),
    "occ_any": OCCUPATIONS,
    "someone": opts("an old man|an old woman|a little boy|a little girl|a young couple|two teenagers|"
                    "a tall man|a tall woman|a man with a dog|a woman on a bicycle"),
    "hot_drink": opts("tea|coffee|hot chocolate|mint tea|ginger tea"),
    "drink": opts("water|lemonade|apple juice|iced tea|orange juice|mint tea|sparkling water|cold milk"),
    "instrument": opts("piano|guitar|violin|cello|drums|flute|trumpet|saxophone|accordion|harp|clarinet"),
    "landmark": opts("old harbor|main square|cathedral|central station|botanical garden|city museum|castle|"
                     "market hall|river"),
    "waterfront": opts("river|beach|harbor|old canal|lake shore"),
    "book_topic": opts("birds|ancient history|the ocean|space travel|famous painters|mountain climbing|volcanoes"),
    "feeling": opts("proud|relieved|happy|a little disappointed|surprised|calm|nervous|excited|tired"),
    "music_genre": opts("jazz|classical music|old rock songs|a podcast about history|folk music|the radio|"
                        "soft piano music"),
    "fact": opts(
        "water boils at 100 degrees Celsius at sea level|the moon travels around the earth about once a month|"
        "plants use sunlight to make sugar from water and carbon dioxide|sound travels faster through water "
        "than through air|light from the sun takes about eight minutes to reach the earth|ice floats because it "
        "is less dense than liquid water|the earth turns once on its axis every day|a rainbow appears when "
        "sunlight is bent by drops of rain|the heart pumps blood around the body without ever resting|an adult "
        "human has 206 bones|most of the surface of the earth is covered by oceans|magnets pull on iron but not "
        "on wood or plastic|copper is a good conductor of electricity|the air we breathe is mostly nitrogen|"
        "lightning is hotter than the surface of the sun|bats find insects in the dark by listening to echoes|"
        "bees carry pollen from one flower to another|Jupiter is the largest planet in the solar system|a day "
        "on Venus is longer than a year on Venus|diamonds and pencil lead are both made of carbon|salt water "
        "freezes at a lower temperature than fresh water|hot air rises because it is lighter than the cold air "
        "around it|seeds need water, air and warmth to start growing|the human brain uses about a fifth of the "
        "body's energy|stars look small only because they are very far away|metal feels colder than wood "
        "because it carries heat away from the hand faster|leaves turn yellow in autumn when their green "
        "pigment breaks down|the Pacific is the largest ocean on earth|octopuses have three hearts|"
        "honeybees tell each other where flowers are by dancing|owls can turn their heads very far|"
        "dolphins sleep with one half of the brain at a time|frogs can drink water through their skin|"
        "crows can solve simple puzzles|horses can sleep standing up|camels can go a long time without water"),
    # cooking
    "dish": opts("vegetable soup|lentil curry|tomato pasta|mushroom risotto|fried rice|potato salad|chicken stew|"
                 "bean chili|spinach pie|noodle soup|fish pie|lemon cake|apple pie|corn bread|pumpkin soup"),
    "baked": opts("bread|cookies|muffins|a birthday cake|cinnamon rolls|banana bread|oat biscuits"),
    "guests": opts("{his} parents|a few friends|the whole family|{his} neighbors|{his} colleagues|"
                   "{his} grandmother|six hungry cousins"),
    "produce": opts("carrots|onions|tomatoes|potatoes|peppers|mushrooms|leeks|beans|apples|lemons|cucumbers|"
                    "sweet potatoes|zucchinis"),
    "staple": opts("flour|rice|pasta|lentils|oats|sugar|noodles|couscous"),
    "dairy": opts("butter|cheese|milk|yogurt|cream|eggs"),
    "food_shop": opts("market|corner shop|supermarket|bakery|farmers' market|grocery store"),
    "chop_verb": opts("chopped|sliced|diced|peeled and cut|washed and chopped|grated"),
    "cookware": opts("large pot|frying pan|baking dish|wok|saucepan|clay pot|roasting tray"),
    "aroma": opts("garlic|fresh bread|onions|cinnamon|roasted peppers|warm butter|ginger|lemon|toasted nuts"),
    "spice": opts("salt|pepper|cumin|paprika|chili|ginger|nutmeg|oregano|thyme|cinnamon|turmeric|basil"),
    "cooked_thing": opts("soup|sauce|bread|rice|stew|cake|pie|dough|curry"),
    "cook_state": opts("soft and golden|bubbling gently|thick and smooth|almost ready|slightly burnt|"
                       "perfectly cooked|still a little raw|light and fluffy"),
    "kitchen_quote": opts("Could you pass me the salt?|Don't touch the pan, it's hot!|I think we need more "
                          "garlic.|Smell that! Dinner is almost ready.|Can you set the table, please?|"
                          "Should I add a little water?|Let's eat outside tonight."),
    "tableware": opts("blue plates|cloth napkins|two candles|a bowl of flowers|old silver forks|a clean tablecloth"),
    "fruit": opts("cherries|grapes|plums|strawberries|oranges|apricots|figs|peaches"),
    "food_adj": opts("delicious|a little too salty|wonderful|better than expected|rich and filling|"
                     "light and fresh|the best they had ever tasted|surprisingly good"),
    # weather
    "weather_adj": opts("cold and gray|bright and sunny|windy|foggy|warm and humid|crisp and clear|wet and gloomy"),
    "forecast": opts("rain was expected in the afternoon|there would be snow in the mountains|tomorrow would "
                     "be warm and sunny|strong winds would arrive after dark|temperatures would drop below zero "
                     "overnight|a storm was moving toward the coast"),
    "landscape": opts("hills|harbor|rooftops|fields|lake|old town"),
    "weather_gear": opts("umbrella|raincoat|warm scarf|sunglasses|rubber boots|woolly hat"),
    "weather_event": opts("a thunderstorm rolled in|a light drizzle began|a cold wind blew from the north|"
                          "thick fog covered the valley|a short hail shower fell|the sun broke through the clouds"),
    "weather_quote": opts("What terrible weather!|I think it's going to snow.|Did you bring an umbrella?|"
                          "At least it's not raining.|It feels like spring already!"),
    "weather_so": opts("it was so hot that the ice cream shop had a long line|it was so cold that the pond "
                       "froze overnight|it was so windy that an umbrella flew down the street|it was so foggy "
                       "that the ferry stayed in the harbor|it was so humid that {his} shirt stuck to {his} back"),
    "cover": opts("a thin layer of snow|white frost|fallen leaves|wet sand|shining drops of rain"),
    "sky_sight": opts("a double rainbow|lightning over the sea|the first snowflakes|a bright full moon|"
                      "clouds racing across the sky"),
    # travel
    "vehicle": opts("train|bus|night train|plane|coach"),
    "travel_items": opts("two shirts, a raincoat|a map, a camera|warm socks, a guidebook|sunscreen, a hat|"
                         "a phone charger, a notebook"),
    "lodging": opts("small hotel|guesthouse|youth hostel|rented apartment|family-run inn|wooden cabin"),
    "street_food": opts("grilled corn|hot dumplings|fried fish|sweet pastries|spicy noodles|fresh fruit|"
                        "roasted chestnuts"),
    "travel_quote": opts("Do you know where the bus stop is?|How far is it to the museum?|Should we take a "
                         "taxi?|What time does the last train leave?|Is this the right platform?"),
    "sight": opts("old buildings|mountains|fishing boats|painted doors|street musicians|narrow streets|bridges"),
    "viewpoint": opts("hill|tower|lighthouse|cliff"),
    # school
    "subject": opts("math|history|biology|chemistry|geography|art|music|physics|English|literature"),
    "school": opts("primary school|high school|community college|language school|university|night school"),
    "exam": opts("test|exam|quiz"),
    "project": opts("posters|science projects|short plays|maps|models of the solar system|reports"),
    "game": opts("football|tag|chess|cards|basketball|jump rope"),
    "school_item": opts("calculator|ruler|pencil case|notebook|dictionary|textbook"),
    "grade": opts("the highest mark in the class|a good grade|an average grade|a disappointing grade|full marks"),
    "school_quote": opts("Did you finish the homework?|Can I borrow your notes?|When is the test?|"
                         "Do you understand this question?|Shall we study together tonight?"),
    # work
    "workplace": opts("office|hospital|bakery|factory|school|library|restaurant|workshop|clinic|bank|"
                      "warehouse|post office|hotel|studio|garage"),
    "work_task": opts("sort the morning mail|repair a broken shelf|update the schedule|check the orders|write "
                      "a short report|clean the equipment|prepare the monthly budget|answer questions from "
                      "customers|fix the printer"),
    "machine": opts("printer|computer network|delivery van|coffee machine|heating system|cash register|elevator"),
    "work_quote": opts("We need this finished by Friday.|Good job on the report, everyone.|Has anyone seen the "
                       "blue folder?|Let's take a short break.|The customers are very happy with your work."),
    # garden
    "plants": opts("tomatoes|sunflowers|beans|peas|strawberries|pumpkins|carrots|herbs|roses|potatoes|lettuces"),
    "flowers": opts("roses|tulips|daisies|sunflowers|lilies|lavender bushes|poppies|marigolds"),
    "color": opts("bright yellow|deep red|pale pink|purple|white|orange|sky blue"),
    "garden_animals": opts("hedgehogs|frogs|sparrows|rabbits|beetles|field mice"),
    "garden_spot": opts("old shed|hedge|compost heap|wooden steps|apple tree"),
    "crop": opts("ripe tomatoes|green beans|plums|apples|cucumbers|raspberries|fresh herbs|zucchinis"),
    "garden_build": opts("raised bed|bird house|compost box|bench|trellis|tool shed"),
    # animals
    "pet_adj": opts("lazy|curious|noisy|gentle|clever|fluffy|shy|playful"),
    "wild_animal": opts("heron|fox|deer|otter|hare|woodpecker|badger|swan|kingfisher"),
    "habitat": opts("bushes|tall grass|reeds|forest|trees"),
    "animal_quote": opts("That animal is smarter than both of us!|Look, it's hiding again!|I think it likes "
                         "you.|Don't let it eat your sandwich!"),
    # science
    "science_field": opts("astronomy|chemistry|geology|biology|physics|the weather|the human body|ocean life"),
    "experiment": opts("a glass of water and a pencil|two magnets and some paper clips|a lemon, a coin and a "
                       "wire|vinegar and baking soda|a flashlight and a prism|ice cubes and salt"),
    "science_quote": opts("Why is the sky blue?|How do birds know where to fly in winter?|Why does ice float?|"
                          "How far away is the moon?|What makes thunder so loud?"),
    # sports
    "sport": opts("football|basketball|volleyball|tennis|hockey|handball|baseball|table tennis|badminton|rugby"),
    "race_dist": opts("five kilometers|ten kilometers|a half marathon|a marathon"),
    "coach_advice": opts("keep {his} eyes on the ball|breathe slowly and stay calm|pass the ball more often|"
                         "run a little faster in the last lap|trust {his} teammates"),
    "sport_action": opts("crossed the finish line|blocked a difficult shot|made a perfect pass|scored the "
                         "winning point|ran past two defenders"),
    "sport_quote": opts("Come on, you can do it!|Keep going!|What a shot!|Faster, faster!|Well done!"),
    # music
    "concert": opts("jazz|rock|folk|classical|pop|blues|choir"),
    "song_topic": opts("the sea|a rainy afternoon|{his} grandmother's kitchen|an old bicycle|leaving home|"
                       "the first day of summer|a lost cat"),
    "music_quote": opts("Can we play that part again?|Who wants to sing the chorus?|Was I too fast?|Should we "
                        "change the key?|Shall we practice again tomorrow?"),
    # city
    "city_place": opts("café|park|bookshop|food market|public library|noodle bar|museum"),
    "city_shop": opts("pharmacy|bakery|hardware store|flower shop|bookshop|corner shop"),
    "city_buy": opts("a loaf of bread|some aspirin|a bunch of tulips|light bulbs|a birthday card|a new umbrella"),
    "city_quote": opts("Excuse me, where is the train station?|Is the museum open today?|Which bus goes to "
                       "the old town?|Is there a good place to eat nearby?"),
    # routine (present tense)
    "morning_s": opts("drinks a glass of water and makes coffee|goes for a short run|reads the news on {his} "
                      "phone|feeds the cat and waters the plants|does ten minutes of stretching|listens to the "
                      "radio while {he} makes breakfast"),
    "weekend_p": opts("visit the market|go hiking in the hills|clean the flat together|cook a big lunch for "
                      "friends|play board games|ride their bikes along the river"),
    "friend_s": opts("cooks dinner on Fridays|plays the guitar in the evenings|works nights at the hospital|"
                     "never forgets a birthday|grows tomatoes on the balcony"),
    "evening_s": opts("reads a novel|calls {his} parents|watches an old film|practices the {instrument}|"
                      "writes in a journal|goes to a dance class"),
    "dislike": opts("loud music|cold weather|waking up early|crowded buses|washing dishes"),
    "like": opts("long walks|quiet mornings|cooking for friends|reading in bed|rainy afternoons"),
    "routine_quote": opts("Life is too short for bad coffee.|We should go to the sea this summer.|Have you seen "
                          "my keys?|Let's order pizza tonight."),
    "neighbors_p": opts("have a noisy dog|grow beautiful roses|play the piano late at night|are very friendly|"
                        "always say hello on the stairs"),
}

# Each topic: lines starting "<" are openers, "=" body sentences, ">" closers.
TOPICS = {
    "cooking": """
< {when}, {name} decided to cook {dish} for {guests}.
< {name} had never made {dish} before, but {he} wanted to try.
< {name}, a {occ} from {town}, spent a whole {weekday} baking {baked}.
< after a long day at work, {name} came home hungry and opened the fridge.
= {he} bought {num_word} {produce}, a bag of {staple} and some {dairy} at the {food_shop}.
= {he} {chop_verb} the {produce} and put them in a {cookware}.
= the kitchen soon smelled of {aroma} and {aroma}.
= {he} added a pinch of {spice}, then a little more, just to be sure.
= after {num} minutes the {cooked_thing} was {cook_state}.
= "{kitchen_quote}" {he} said to {his} {kin} {friend}.
= {friend} tasted the sauce and said it needed more {spice}.
= the recipe called for {grams} grams of {staple}, but {he} only had half of that.
= while the {cooked_thing} cooled, {he} washed the dishes and wiped the counter.
= {he} set the table with {tableware} and a jug of {drink}.
= {friend} arrived with a bottle of {drink} and a bowl of {fruit}.
> everyone agreed that the {dish} was {food_adj}.
> {he} wrote the recipe in {his} notebook so {he} could make it again.
> by the end of the evening, there was nothing left but a few crumbs.
""",
    "weather": """
< the morning was {weather_adj}, and {name} looked out of the window with a cup of {hot_drink}.
< {when}, the weather in {town} changed quickly, and {name} was glad to be at home.
< {name} checked the forecast before leaving home: {forecast}.
< it had been raining for {num_word} days, and {name} was tired of the puddles in {town}.
= by noon the temperature had reached {temp}.
= dark clouds gathered over the {landscape}, and the wind grew stronger.
= {he} took {his} {weather_gear} just in case.
= {weather_event} in the late afternoon.
= children splashed in the puddles while their parents hurried home.
= "{weather_quote}" said {friend}, pulling up {fhis} collar.
= the radio said that {forecast}.
= from the balcony, {he} could see {sky_sight}.
= {weather_so}.
> by evening the sky was clear again, and the stars came out.
> {he} made a pot of {hot_drink} and listened to the rain on the roof.
> the next morning, everything was covered in {cover}.
""",
    "travel": """
< {name} and {his} {kin} {friend} took the {vehicle} to {city} {when_rel}.
< last {season}, {name} traveled to {country} for the first time.
< {name}, a young {person} from {town}, had saved money for months to visit {city}.
< the {vehicle} to {city} left at {clock}, so {name} got up before sunrise.
= {he} packed {travel_items} and a small bag of snacks.
= the journey took {num_word} hours, and {he} read a book about {book_topic} on the way.
= they stayed in a {lodging} near the {landmark}.
= on the first day, they walked along the {waterfront} and ate {street_food} from a stall.
= a friendly {occ_any} showed them the way to the {landmark}.
= "{travel_quote}" asked {friend}.
= the tickets cost {price}, which was more than {he} had expected.
= {he} took dozens of photos of the {sight}.
= their {vehicle} was delayed by {num} minutes, so they had a coffee while they waited.
= {he} tried to speak a little of the local language, and people smiled.
= in the evening, they watched the sunset from the top of a {viewpoint}.
> when {he} got home, {he} was tired but happy.
> {he} promised {himself} to come back one day.
> it was the best trip {he} had taken in years.
""",
    "school": """
< {name} taught {subject} at the {school} in {town}.
< on the first day of the new term, {name} arrived early at the {school}.
< {name} had a big {exam} in {subject} {when_rel}.
= the teacher asked the class to read {num_word} pages about {book_topic}.
= {he} sat next to {friend}, who always had spare pencils.
= in the {subject} lesson, they learned that {fact}.
= {he} studied in the library until it closed at {clock}.
= "{school_quote}" asked {friend}.
= the students worked in groups and presented their {project} to the class.
= during the break, {he} played {game} with {friend} and a few others.
= {he} forgot {his} {school_item} at home and had to borrow one.
= the {exam} had {num} questions, and the last one was very hard.
= {he} got {grade} and felt {feeling}.
> after school, {he} walked home with {friend} and talked about the {exam}.
> that night, {he} went to bed early and dreamed about {book_topic}.
> {he} knew that {he} would have to work harder next time.
""",
    "work": """
< {name} worked as a {occ} in {town}.
< {name} had worked as a {occ} for {num} years.
< it was a busy {weekday} at the {workplace} where {name} worked.
< {name} started a new job as a {occ} {when_rel}.
= {he} arrived at {clock} and made a list of everything {he} had to do.
= {his} first task was to {work_task}.
= at lunch, {he} ate a sandwich with {his} colleague {friend}.
= the meeting lasted {num_word} hours, and nobody agreed on anything.
= "{work_quote}" said {his} manager.
= {he} answered {num} emails and called {num_word} customers.
= a problem with the {machine} kept everyone busy for the whole afternoon.
= {he} helped a new colleague learn how to {work_task}.
= {he} took a short break and walked around the block to clear {his} head.
> when {he} finally left the {workplace}, the sun had already set.
> it had been a long day, but {name} felt that {he} had done good work.
> on the bus home, {he} listened to {music_genre} and closed {his} eyes.
""",
    "garden": """
< {name} had a small garden behind {his} house in {town}.
< every {season}, {name} planted {plants} along the fence.
< {when}, {name} spent the whole day in the garden.
= {he} dug the soil, pulled out the weeds and watered the {plants}.
= the {plants} grew taller than {he} had expected.
= a family of {garden_animals} lived under the {garden_spot}.
= {he} picked a basket of {crop} and shared them with {his} neighbors.
= the {flowers} were {color} and smelled sweet in the evening.
= {friend} gave {him} some seeds from {fhis} own garden.
= slugs had eaten half of the lettuce, which made {him} sigh.
= {he} built a small {garden_build} out of old wooden boards.
= bees and butterflies visited the {flowers} all afternoon.
= after the rain, the soil was dark and soft.
> in the evening, {he} sat on the bench and enjoyed the quiet garden.
> by the end of the {season}, the garden was full of color.
> {he} was already planning what to plant next year.
""",
    "animals": """
< {name} had a {pet_adj} {pet} called {pet_name}.
< on a walk by the {waterfront}, {name} saw a {wild_animal}.
< {name}, a {occ}, volunteered at an animal shelter every {weekday}.
= {pet_name} liked to sleep in the sun by the window.
= every morning, {he} fed {pet_name} and filled the water bowl.
= {pet_name} was afraid of the vacuum cleaner but loved visitors.
= {he} read that {fact}.
= the vet said that {pet_name} was healthy but a little too heavy.
= the {wild_animal} watched {him} for a moment and then disappeared into the {habitat}.
= at the shelter, {he} brushed the dogs and cleaned the cages.
= "{animal_quote}" laughed {friend}.
> {he} thought that animals made life a lot more interesting.
> that night, {pet_name} slept at the foot of {his} bed.
> {he} took a picture to show {his} {kin} {friend}.
""",
    "science": """
< {name}, a {occ}, loved reading about science in {his} free time.
< at the science museum in {city}, {name} learned something new.
< {name}'s {kin} {friend} asked {him} a question that {he} could not answer at first.
= {he} learned that {fact}.
= {he} explained to {friend} that {fact}.
= one exhibit showed that {fact}.
= {he} did a simple experiment with {experiment}.
= "{science_quote}" asked {friend}.
= {he} wrote down the results in a notebook and drew a small diagram.
> {he} decided to learn more about {science_field}.
> science, {he} thought, made the ordinary world feel new.
""",
    "sports": """
< {name} played {sport} for a local team in {town}.
< {when}, {name} ran {race_dist} for the first time.
< the {sport} final was on {weekday}, and {name} could hardly sleep the night before.
= {he} trained {num_word} times a week, even when it rained.
= {his} coach told {him} to {coach_advice}.
= the other team scored first, but {name}'s team did not give up.
= in the last minutes, {his} team scored twice and won {score}.
= the crowd cheered as {he} {sport_action}.
= {he} finished in {ordinal} place, which was a personal best.
= "{sport_quote}" shouted {friend} from the stands.
= afterwards, {he} stretched {his} legs and drank a lot of water.
= {his} knee hurt a little, so {he} rested for a few days.
> it was a day {he} would remember for a long time.
> {he} went home tired, muddy and very happy.
> {he} was already looking forward to the next match.
""",
    "music": """
< {name} had played the {instrument} since {he} was a child.
< {when}, {name} went to a {concert} concert in {city}.
< {name} and {friend} started a small band with {num_word} friends.
= {he} practiced for an hour every evening, slowly at first and then faster.
= the {instrument} was old, but it still had a warm, clear sound.
= {his} neighbors sometimes knocked on the wall when {he} played too loudly.
= the band played {num_word} songs, and the last one was the crowd's favorite.
= {he} wrote a song about {song_topic}.
= "{music_quote}" asked {friend} after the rehearsal.
= the concert hall was full, and the audience clapped for a long time.
= {he} learned a new piece by a composer from {country}.
= {his} teacher said that {he} should listen more and play less.
> music, {he} said, was the best way to end a long day.
> {he} played one last song before going to bed.
> {he} hoped to perform on a real stage one day.
""",
    "city": """
< {name} lived on the {ordinal} floor of an apartment building in {city}.
< {when}, {name} walked through the busy center of {city}.
< the streets of {city} were crowded, and {name} was in a hurry.
= cars honked, buses stopped and started, and cyclists rang their bells.
= {he} bought a newspaper and a coffee at the kiosk on the corner.
= a street musician was playing the {instrument} near the {landmark}.
= the subway was so full that {he} had to stand all the way.
= {he} met {friend} at a {city_place} near {his} office.
= new buildings were going up everywhere, and cranes filled the sky.
= on the way home, {he} stopped at the {city_shop} to buy {city_buy}.
= "{city_quote}" asked {someone} with a large map.
= from {his} window, {he} could see the lights of the whole city.
> city life was loud and tiring, but {he} would not live anywhere else.
> when night fell, the city grew quiet at last.
> {he} was happy to close the door and make a cup of {hot_drink}.
""",
    "routine": """
< {name} lives in {town} and works as a {occ}.
< {name} is a {occ} who shares a small flat in {city} with {his} {kin} {friend}.
= every morning, {he} {morning_s}.
= on weekends, {he} and {friend} {weekend_p}.
= {his} {kin} {friend} {friend_s}.
= in the evening, {he} usually {evening_s}.
= {he} does not like {dislike}, but {he} enjoys {like}.
= {friend} often says, "{routine_quote}"
= the neighbors {neighbors_p}.
= most days, {he} walks to work because the bus is always late.
> it is a simple life, but {he} likes it.
> {he} says that small habits make a big difference.
""",
}
# Slots drawn once per document, so that e.g. the instrument or the city stays the same throughout.
DOC_SLOTS = ("city", "town", "country", "season", "weekday", "dish", "produce", "exam", "subject", "sport",
             "instrument", "plants", "flowers", "workplace", "vehicle", "wild_animal")
CONNECTIVES = opts("later,|after that,|then|soon|meanwhile,|a little later,|before long,|after a while,")
SLOT = re.compile(r"\{(\w+)\}")
PRESENT_TENSE_TOPICS = {"routine"}


def parse_topic(block):
    """Split a topic block into (openers, bodies, closers) template lists."""
    parts = {"<": [], "=": [], ">": []}
    for line in block.strip().splitlines():
        parts[line[0]].append(line[2:])
    return parts["<"], parts["="], parts[">"]


PARSED_TOPICS = {name: parse_topic(block) for name, block in TOPICS.items()}


def pick_occupation(rng, gender, balance):
    """Pick an occupation this gender has not been paired with more often than the other gender."""
    other = "f" if gender == "m" else "m"
    fair = [occ for occ in OCCUPATIONS if balance[occ, gender] <= balance[occ, other]]
    return rng.choice(fair or OCCUPATIONS)


def make_context(rng, balance):
    """Bind the protagonist, a friend and a pet for one document."""
    gender, friend_gender = rng.choice("mf"), rng.choice("mf")
    names = {"m": MALE_NAMES, "f": FEMALE_NAMES}
    he, his, him, himself, person = PRONOUNS[gender]
    friend_name = rng.choice(names[friend_gender])
    name = rng.choice([n for n in names[gender] if n != friend_name])
    return {
        "gender": gender, "name": name, "he": he, "his": his, "him": him, "himself": himself, "person": person,
        "occ": pick_occupation(rng, gender, balance),
        "friend": friend_name, "fhis": PRONOUNS[friend_gender][1], "kin": rng.choice(KIN[friend_gender]),
        "pet": rng.choice(opts(PETS)), "pet_name": rng.choice(opts(PET_NAMES)),
        **{key: rng.choice(VOCAB[key]) for key in DOC_SLOTS},
    }


def expand(template, rng, ctx):
    """Recursively fill {slot}s from the document context, then VOCAB."""
    def fill(match):
        key = match.group(1)
        if key in ctx:
            return ctx[key]
        options = VOCAB[key]
        value = options(rng) if callable(options) else rng.choice(options)
        return expand(value, rng, ctx)
    return SLOT.sub(fill, template)


def fix_articles(text):
    """Turn 'a' into 'an' before vowel sounds ('a engineer' -> 'an engineer')."""
    def repl(match):
        article, word = match.groups()
        if word.lower().startswith(("uni", "use", "one", "eu")):
            return match.group(0)
        return f"{article}n {word}"
    return re.sub(r"\b([Aa]) ([aeiouAEIOU]\w*)", repl, text)


def fix_quote_comma(sentence):
    """'"We need garlic." she said' -> '"We need garlic," she said'."""
    return re.sub(r'\.(" [a-z])', r',\1', sentence)


def capitalize(sentence):
    """Upper-case the first letter, skipping a leading quotation mark."""
    i = 1 if sentence.startswith('"') else 0
    return sentence[:i] + sentence[i].upper() + sentence[i + 1:]


def make_document(rng, balance):
    """One paragraph: an opener, 1-4 body sentences and usually a closer.

    ``balance`` counts (occupation, gender) pairs that made it into the text and is updated in place.
    """
    topic = rng.choice(sorted(PARSED_TOPICS))
    openers, bodies, closers = PARSED_TOPICS[topic]
    ctx = make_context(rng, balance)
    templates = [rng.choice(openers)]
    for body in rng.sample(bodies, rng.randint(1, 4)):
        can_connect = topic not in PRESENT_TENSE_TOPICS and body.startswith("{he} ")
        if can_connect and rng.random() < CONNECTIVE_PROB:
            body = f"{rng.choice(CONNECTIVES)} {body}"
        templates.append(body)
    if rng.random() < CLOSER_PROB:
        templates.append(rng.choice(closers))
    text = " ".join(capitalize(fix_quote_comma(fix_articles(expand(t, rng, ctx)))) for t in templates)
    if re.search(rf"\b{ctx['occ']}\b", text):
        balance[ctx["occ"], ctx["gender"]] += 1
    return text


def generate(seed, target_bytes, exclude=frozenset()):
    """Generate unique documents until their UTF-8 size reaches target_bytes."""
    rng = random.Random(seed)
    docs, seen, size, balance = [], set(exclude), 0, Counter()
    while size < target_bytes:
        doc = make_document(rng, balance)
        if doc in seen:
            continue
        seen.add(doc)
        docs.append(doc)
        size += len(doc.encode("utf-8")) + 1
    return docs


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def main():
    train = generate(TRAIN_SEED, TRAIN_BYTES)
    val = generate(VAL_SEED, VAL_BYTES, exclude=frozenset(train))
    write_lines(OUT_DIR / "train.txt", train)
    write_lines(OUT_DIR / "val.txt", val)
    print(f"wrote {len(train)} train and {len(val)} val documents to {OUT_DIR}")


if __name__ == "__main__":
    main()
